//! Byte sizes as administrators write them: `512M`, `20G`, `1.5T`.

/// The error for a string that is not a valid size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size `{text}`; write a number of bytes with an optional K, M, G or T suffix, such as `20G`")]
pub struct InvalidSize {
    text: String,
}

/// Parses a size with an optional binary suffix (`K`, `M`, `G`, `T`, also
/// written `KiB`, `MB` and so on; all are powers of 1024).
pub fn parse(text: &str) -> Result<u64, InvalidSize> {
    let invalid = || InvalidSize { text: text.into() };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(invalid()),
    };
    if number.is_empty() {
        return Err(invalid());
    }
    let bytes = if let Ok(whole) = number.parse::<u64>() {
        whole.checked_mul(1 << shift).ok_or_else(invalid)?
    } else {
        let fraction: f64 = number.parse().map_err(|_| invalid())?;
        let bytes = fraction * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(invalid());
        }
        bytes as u64
    };
    Ok(bytes)
}

/// Formats `bytes` with a binary unit and one decimal, such as `1.5 GiB`.
pub fn format(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sizes() {
        let cases = [
            ("0", 0),
            ("4096", 4096),
            ("1K", 1024),
            ("512M", 512 << 20),
            ("20G", 20 << 30),
            ("20g", 20 << 30),
            ("20GiB", 20 << 30),
            ("20 GB", 20 << 30),
            ("1.5T", 3 << 39),
            ("2T", 2 << 40),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse(text), Ok(bytes), "size {text:?}");
        }
    }

    #[test]
    fn parse_rejects_garbage() {
        for text in ["", "G", "-1G", "12X", "1.2.3G", "99999999999T", "1e3"] {
            assert!(parse(text).is_err(), "size {text:?} was accepted");
        }
    }

    #[test]
    fn format_sizes() {
        assert_eq!(format(0), "0 B");
        assert_eq!(format(1023), "1023 B");
        assert_eq!(format(1536), "1.5 KiB");
        assert_eq!(format(20 << 30), "20.0 GiB");
    }
}
