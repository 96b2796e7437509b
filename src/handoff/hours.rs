//! Business hours: a weekly schedule in a time zone. Outside it (or with nobody online who has the
//! skill) a waiting customer is told so and can leave a message; the conversation stays queued.

use chrono::{Datelike, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

pub use crate::config::BusinessHoursConfig;
use crate::store::Millis;

#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    zone: Tz,
    /// Monday = 0; minutes since midnight, [start, end).
    days: [Vec<(u32, u32)>; 7],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HoursError {
    #[error("unknown time zone {0:?} (use an IANA name such as Europe/London)")]
    Zone(String),
    #[error("unknown day {0:?} (use mon, tue, wed, thu, fri, sat, sun)")]
    Day(String),
    #[error("{day}: {range:?} is not a HH:MM-HH:MM range with start before end")]
    Range { day: String, range: String },
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl BusinessHours {
    pub fn from_config(config: &BusinessHoursConfig) -> Result<Self, HoursError> {
        let zone: Tz = config
            .timezone
            .parse()
            .map_err(|_| HoursError::Zone(config.timezone.clone()))?;
        let mut days: [Vec<(u32, u32)>; 7] = Default::default();
        for (day, ranges) in &config.weekly {
            let index = DAYS
                .iter()
                .position(|d| d.eq_ignore_ascii_case(day.trim()))
                .ok_or_else(|| HoursError::Day(day.clone()))?;
            for range in ranges.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let invalid = || HoursError::Range {
                    day: day.clone(),
                    range: range.to_string(),
                };
                let (start, end) = range.split_once('-').ok_or_else(invalid)?;
                let minutes = |text: &str| -> Option<u32> {
                    let text = text.trim();
                    if text == "24:00" {
                        return Some(24 * 60);
                    }
                    NaiveTime::parse_from_str(text, "%H:%M")
                        .ok()
                        .map(|t| t.hour() * 60 + t.minute())
                };
                let (start, end) = (
                    minutes(start).ok_or_else(invalid)?,
                    minutes(end).ok_or_else(invalid)?,
                );
                if start >= end {
                    return Err(invalid());
                }
                days[index].push((start, end));
            }
        }
        Ok(Self { zone, days })
    }

    pub fn is_open(&self, at: Millis) -> bool {
        let Some(utc) = Utc.timestamp_millis_opt(at).single() else {
            return false;
        };
        let local = utc.with_timezone(&self.zone);
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        self.days[day]
            .iter()
            .any(|(start, end)| (*start..*end).contains(&minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(zone: &str, pairs: &[(&str, &str)]) -> Result<BusinessHours, HoursError> {
        BusinessHours::from_config(&BusinessHoursConfig {
            timezone: zone.into(),
            weekly: pairs
                .iter()
                .map(|(d, r)| (d.to_string(), r.to_string()))
                .collect(),
        })
    }

    fn at(rfc3339: &str) -> Millis {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn open_inside_the_local_schedule_only() {
        let h = hours(
            "Europe/Berlin",
            &[("mon", "09:00-12:00, 13:00-17:00"), ("sat", "10:00-14:00")],
        )
        .unwrap();
        // Monday 2026-11-23, Berlin is UTC+1 in November.
        assert!(h.is_open(at("2026-11-23T08:30:00Z"))); // 09:30 local
        assert!(!h.is_open(at("2026-11-23T11:30:00Z"))); // 12:30 local: lunch
        assert!(!h.is_open(at("2026-11-23T07:59:00Z"))); // 08:59 local
        assert!(!h.is_open(at("2026-11-24T09:00:00Z"))); // Tuesday: closed
        assert!(h.is_open(at("2026-11-28T12:00:00Z"))); // Saturday 13:00 local
    }

    #[test]
    fn bad_configuration_is_named() {
        assert_eq!(
            hours("Mars/Olympus", &[]).unwrap_err(),
            HoursError::Zone("Mars/Olympus".into())
        );
        assert!(matches!(
            hours("UTC", &[("funday", "09:00-10:00")]),
            Err(HoursError::Day(_))
        ));
        assert!(matches!(
            hours("UTC", &[("mon", "17:00-09:00")]),
            Err(HoursError::Range { .. })
        ));
        assert!(matches!(
            hours("UTC", &[("mon", "9am-5pm")]),
            Err(HoursError::Range { .. })
        ));
        assert!(hours("UTC", &[("sun", "00:00-24:00")]).is_ok());
    }
}
