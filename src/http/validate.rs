//! The checks every way in applies to a customer's text (HTTP messages, the WebSocket, the
//! understanding endpoint), written once so the three cannot drift apart.

use super::error::AppError;

/// Longest `client_message_id`, in bytes: enough for any UUID or ULID with a prefix.
pub const MAX_CLIENT_MESSAGE_ID: usize = 128;

/// The text without surrounding whitespace, refused when empty or over `limit` characters.
pub fn message_text(text: &str, limit: usize) -> Result<&str, AppError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(AppError::BadRequest("text must not be empty".into()));
    }
    let length = text.chars().count();
    if length > limit {
        return Err(AppError::TooLong {
            actual: length,
            limit,
        });
    }
    Ok(text)
}

/// A client's idempotency key, when given, must be 1 to [`MAX_CLIENT_MESSAGE_ID`] bytes.
pub fn client_message_id(id: Option<&str>) -> Result<(), AppError> {
    match id {
        Some(id) if id.is_empty() || id.len() > MAX_CLIENT_MESSAGE_ID => Err(AppError::BadRequest(
            format!("client_message_id must be 1 to {MAX_CLIENT_MESSAGE_ID} bytes"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded_in_characters() {
        assert_eq!(message_text("  hi \n", 10).unwrap(), "hi");
        assert!(matches!(
            message_text(" \t ", 10),
            Err(AppError::BadRequest(_))
        ));
        // Characters, not bytes: five two-byte letters fit a limit of five.
        assert_eq!(message_text("ééééé", 5).unwrap(), "ééééé");
        assert!(matches!(
            message_text("éééééé", 5),
            Err(AppError::TooLong {
                actual: 6,
                limit: 5
            })
        ));
    }

    #[test]
    fn client_message_ids_are_one_to_128_bytes() {
        assert!(client_message_id(None).is_ok());
        assert!(client_message_id(Some("a")).is_ok());
        assert!(client_message_id(Some(&"x".repeat(128))).is_ok());
        assert!(client_message_id(Some("")).is_err());
        assert!(client_message_id(Some(&"x".repeat(129))).is_err());
    }
}
