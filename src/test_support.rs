//! Strategies shared by the property tests beside the parsers of outside input: a valid sample
//! with a handful of byte-level edits (what a truncated upload, a bad editor or an attacker
//! produces) and plain arbitrary bytes.

use proptest::prelude::*;

/// One edit to a byte string; positions are taken modulo its length when applied.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    // Inserted bytes favour the characters that matter to the formats (quotes, brackets, colons,
    // newlines, indentation, markup) over random noise.
    let special = prop::sample::select(b"\"'{}[]:,-#<>/\\\n\r\t |*`=&;%\x00\xff\xc3".to_vec());
    let inserted = prop::collection::vec(prop_oneof![special, any::<u8>()], 1..8);
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), inserted).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..256).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Flip(at, b) => {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = *b;
                }
            }
            Edit::Insert(at, inserted) => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, inserted.iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Edit::Duplicate(at, n) => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    let copy: Vec<u8> = bytes[at..end].to_vec();
                    bytes.splice(end..end, copy);
                }
            }
            Edit::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

/// `sample` with 1 to 6 random edits.
pub fn mutated(sample: &[u8]) -> impl Strategy<Value = Vec<u8>> {
    let sample = sample.to_vec();
    prop::collection::vec(edit(), 1..6).prop_map(move |edits| apply(sample.clone(), &edits))
}

/// Arbitrary bytes, up to `max` of them.
pub fn noise(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_stay_within_bounds() {
        let edits = [
            Edit::Delete(3, 100),
            Edit::Duplicate(1, 2),
            Edit::Insert(99, b"xy".to_vec()),
            Edit::Flip(7, b'!'),
            Edit::Truncate(4),
        ];
        let out = apply(b"abcdef".to_vec(), &edits[..1]);
        assert_eq!(out, b"abc");
        let out = apply(out, &edits[1..2]);
        assert_eq!(out, b"abcbc");
        // On an empty input: the insert makes "xy", the flip "x!", the truncate "".
        assert_eq!(apply(Vec::new(), &edits), b"");
    }
}
