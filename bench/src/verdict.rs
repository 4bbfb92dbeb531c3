//! How the reports say whether a target was met.

/// "met" or "MISSED".
pub fn met(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

/// "met", "MISSED", or "n/a" where the run could not tell.
pub fn met_if_known(met: Option<bool>) -> &'static str {
    met.map_or("n/a", self::met)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_met_missed_or_not_applicable() {
        assert_eq!(met(true), "met");
        assert_eq!(met(false), "MISSED");
        assert_eq!(met_if_known(Some(true)), "met");
        assert_eq!(met_if_known(Some(false)), "MISSED");
        assert_eq!(met_if_known(None), "n/a");
    }
}
