//! A request rate with its burst, as written in code (`Rate::per_second(100).burst(20)`) or in a
//! policy file (`rate = "100/s"`, `burst = 20`).

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

/// How many requests a caller may make per second, minute or hour, and how many it may make at
/// once after being idle (the burst).
///
/// The limit is a GCRA (generic cell rate algorithm, the `governor` crate): requests are spread
/// evenly over the period (`100/s` admits one every 10 ms), and a caller that was idle may
/// spend up to `burst` requests at once. Without [`burst`](Self::burst), the burst is one
/// period's worth (`100/s` bursts to 100).
///
/// ```
/// use secure_channel::layer::rate_limit::Rate;
///
/// let rate: Rate = "100/s".parse()?;
/// assert_eq!(rate, Rate::per_second(100));
/// assert_eq!(rate.burst_size(), 100);
/// assert_eq!(Rate::per_minute(600).burst(20).burst_size(), 20);
/// assert_eq!("1/h".parse::<Rate>()?.to_string(), "1/h");
/// # Ok::<(), secure_channel::layer::rate_limit::RateParseError>(())
/// ```
///
/// A rate of zero requests, or a burst of zero, is refused when the layer or policy holding it
/// is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    unit: Unit,
    burst: Option<u32>,
}

/// The period a [`Rate`] counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Unit {
    Second,
    Minute,
    Hour,
}

impl Unit {
    fn duration(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
            Self::Hour => Duration::from_secs(3600),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Second => "s",
            Self::Minute => "m",
            Self::Hour => "h",
        }
    }
}

impl Rate {
    /// `count` requests per second.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Unit::Second)
    }

    /// `count` requests per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Unit::Minute)
    }

    /// `count` requests per hour.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Unit::Hour)
    }

    const fn new(count: u32, unit: Unit) -> Self {
        Self {
            count,
            unit,
            burst: None,
        }
    }

    /// Sets how many requests an idle caller may make at once (default: the rate's count).
    #[must_use]
    pub const fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The number of requests per [`period`](Self::period).
    pub fn requests(&self) -> u32 {
        self.count
    }

    /// The period the requests are counted over: a second, a minute or an hour.
    pub fn period(&self) -> Duration {
        self.unit.duration()
    }

    /// The burst: as set, or the rate's count.
    pub fn burst_size(&self) -> u32 {
        self.burst.unwrap_or(self.count)
    }

    /// The GCRA quota, or what is zero (`Err(true)`: the count, `Err(false)`: the burst).
    pub(crate) fn quota(&self) -> Result<governor::Quota, Zero> {
        let count = NonZeroU32::new(self.count).ok_or(Zero::Rate)?;
        let burst = NonZeroU32::new(self.burst_size()).ok_or(Zero::Burst)?;
        // One request every period / count (at least a nanosecond: `u32::MAX/s` is 0.23 ns).
        let interval = (self.period() / count.get()).max(Duration::from_nanos(1));
        governor::Quota::with_period(interval)
            .map(|quota| quota.allow_burst(burst))
            .ok_or(Zero::Rate)
    }
}

/// Which part of a [`Rate`] is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    Rate,
    Burst,
}

/// `100/s`, `5/m`, `1/h` (the burst is not part of the text).
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit.suffix())
    }
}

/// Parses `<count>/<unit>`: a whole number of requests from 1, then `s`, `m` or `h` (also
/// `sec`, `second`, `min`, `minute`, `hour`), as in `"100/s"`.
impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |problem: &'static str| RateParseError {
            input: input.to_owned(),
            problem,
        };
        let (count, unit) = input
            .split_once('/')
            .ok_or_else(|| error("expected <requests>/<unit>, such as \"100/s\""))?;
        let count = count.trim();
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error(
                "the number of requests must be a whole number, such as \"100/s\"",
            ));
        }
        let count: u32 = count
            .parse()
            .map_err(|_| error("the number of requests is too large (at most 4294967295)"))?;
        if count == 0 {
            return Err(error(
                "a rate of 0 requests refuses every request; use at least 1",
            ));
        }
        let unit = match unit.trim() {
            "s" | "sec" | "second" => Unit::Second,
            "m" | "min" | "minute" => Unit::Minute,
            "h" | "hour" => Unit::Hour,
            _ => {
                return Err(error(
                    "the unit must be s, m or h (per second, minute or hour)",
                ));
            }
        };
        Ok(Self::new(count, unit))
    }
}

/// Why a rate's text is not `<count>/<unit>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate {input:?}: {problem}")]
pub struct RateParseError {
    input: String,
    problem: &'static str,
}

impl RateParseError {
    /// The text that was refused.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// What is wrong with it and what is expected.
    pub fn problem(&self) -> &str {
        self.problem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, rate) in [
            ("100/s", Rate::per_second(100)),
            ("5/m", Rate::per_minute(5)),
            ("1/h", Rate::per_hour(1)),
            (" 7 / second ", Rate::per_second(7)),
            ("3/min", Rate::per_minute(3)),
            ("2/hour", Rate::per_hour(2)),
        ] {
            assert_eq!(text.parse::<Rate>(), Ok(rate), "{text}");
        }
        assert_eq!(Rate::per_minute(5).to_string(), "5/m");
        assert_eq!(Rate::per_hour(1).burst(3).to_string(), "1/h");
    }

    #[test]
    fn refuses_what_is_not_a_rate() {
        for (text, problem) in [
            ("100", "expected <requests>/<unit>"),
            ("0/s", "0 requests"),
            ("-1/s", "whole number"),
            ("1.5/s", "whole number"),
            ("/s", "whole number"),
            ("99999999999/s", "too large"),
            ("1/d", "unit"),
            ("1/", "unit"),
        ] {
            let error = text.parse::<Rate>().unwrap_err();
            assert_eq!(error.input(), text);
            assert!(error.problem().contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn quota_spreads_the_period() {
        let quota = Rate::per_second(100).quota().unwrap();
        assert_eq!(quota.replenish_interval(), Duration::from_millis(10));
        assert_eq!(quota.burst_size().get(), 100);
        let quota = Rate::per_hour(1).burst(3).quota().unwrap();
        assert_eq!(quota.replenish_interval(), Duration::from_secs(3600));
        assert_eq!(quota.burst_size().get(), 3);
        assert_eq!(Rate::per_second(0).quota(), Err(Zero::Rate));
        assert_eq!(Rate::per_second(1).burst(0).quota(), Err(Zero::Burst));
        // The smallest interval governor can count is a nanosecond.
        assert!(Rate::per_second(u32::MAX).quota().is_ok());
    }
}
