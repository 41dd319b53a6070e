//! Value parsers for flags whose range the type alone does not say; clap reports a value they
//! refuse as a usage error (exit status 2), naming the flag.

/// A count of at least 1.
pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(value) => Ok(value),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// Threads for tensor work: 1 to 1024.
pub fn threads(text: &str) -> Result<usize, String> {
    const MAX: usize = 1024;
    let value = positive(text)?;
    if value > MAX {
        return Err(format!("at most {MAX} threads"));
    }
    Ok(value)
}

/// A finite number above 0.
pub fn positive_number(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value.is_finite() && value > 0.0 => Ok(value),
        Ok(_) => Err("must be a finite number above 0".into()),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// A pixel scale: a number or a fraction above 0, such as `1` or `1/255`.
pub fn pixel_scale(text: &str) -> Result<f64, String> {
    mnist_cnn::exchange::parse_pixel_scale(text)
        .ok_or_else(|| format!("`{text}` is not a number or fraction above 0 (such as 1 or 1/255)"))
}

/// A fraction in [0, 1).
pub fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..1.0).contains(&value) => Ok(value),
        Ok(_) => Err("must be at least 0 and below 1".into()),
        Err(_) => Err(format!("`{text}` is not a number")),
    }
}

/// Seconds of a timeout: 1 second to 1 day.
pub fn timeout_seconds(text: &str) -> Result<u64, String> {
    const DAY: u64 = 86_400;
    match text.trim().parse::<u64>() {
        Ok(value) if (1..=DAY).contains(&value) => Ok(value),
        Ok(_) => Err(format!("must be 1 to {DAY} seconds")),
        Err(_) => Err(format!("`{text}` is not a whole number of seconds")),
    }
}

/// A path for a PNG picture: its name must end in `.png`, so that a `.jpg` or `.svg` name never
/// holds PNG bytes.
pub fn png_path(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    match path.extension().and_then(|e| e.to_str()) {
        Some(extension) if extension.eq_ignore_ascii_case("png") => Ok(path),
        Some(extension) => Err(format!(
            "only PNG pictures can be written, and `.{extension}` names another format; use a name ending in .png"
        )),
        None => Err("the name must end in .png".into()),
    }
}

/// An image size as WIDTHxHEIGHT, or one number for a square.
pub fn image_size(text: &str) -> Result<(u32, u32), String> {
    let parse = |part: &str| {
        part.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{text}` is not a size like 28x28"))
    };
    match text.split_once(['x', 'X']) {
        Some((width, height)) => Ok((parse(width)?, parse(height)?)),
        None => parse(text).map(|side| (side, side)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(positive("0").is_err());
        assert_eq!(positive("3"), Ok(3));
        assert!(threads("1025").is_err());
        assert!(positive_number("inf").is_err());
        assert!(positive_number("-1").is_err());
        assert!(fraction("1").is_err());
        assert_eq!(fraction("0"), Ok(0.0));
        assert!(timeout_seconds("9223372036854775807").is_err());
        assert_eq!(image_size("64"), Ok((64, 64)));
        assert_eq!(image_size("32x16"), Ok((32, 16)));
        assert!(png_path("x.PNG").is_ok());
        assert!(png_path("x.jpg").unwrap_err().contains(".jpg"));
        assert!(png_path("x").is_err());
    }
}
