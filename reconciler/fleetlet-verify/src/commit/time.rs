//! UTC calendar conversions for allowed_signers timestamps and for messages, without pulling a
//! date library into the verifier (days-from-civil, H. Hinnant's algorithm).

/// Unix seconds for a UTC calendar time; `None` when a field is out of range.
pub(crate) fn unix_from_utc(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
) -> Option<i64> {
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || !(0..24).contains(&hour)
        || !(0..60).contains(&minute)
        || !(0..60).contains(&second)
    {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// `2024-05-01T12:00:00Z` for Unix seconds.
pub(crate) fn format_utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(unix_from_utc(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_from_utc(2020, 1, 1, 0, 0, 0), Some(1_577_836_800));
        assert_eq!(unix_from_utc(2024, 2, 29, 23, 59, 59), Some(1_709_251_199));
        assert_eq!(unix_from_utc(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(unix_from_utc(2023, 4, 31, 0, 0, 0), None);
        assert_eq!(unix_from_utc(2023, 1, 1, 24, 0, 0), None);
        assert_eq!(format_utc(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59Z");
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_800] {
            let (y, m, d) = civil_from_days(t / 86_400);
            assert_eq!(unix_from_utc(y, m, d, 0, 0, 0), Some(t - t % 86_400));
        }
    }
}
