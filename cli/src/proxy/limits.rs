//! `proxy inbound`'s per-caller limits: the library's rate-limit layer from flags. Limits of
//! policy rules (`rate`, `burst`, `concurrency`) need no flag: the policy enforces them.

use clap::Args;
use secure_channel::layer::rate_limit::{Limit, Rate, RateLimitLayer};

use crate::failure::Failure;

/// Limits every caller by its verified SPIFFE ID, before its token is checked or its route
/// authorized (http mode). Over a limit: 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED).
#[derive(Debug, Args)]
pub(crate) struct LimitFlags {
    /// Each caller's request rate: N/s, N/m or N/h (such as 100/s).
    #[arg(long = "rate-limit", value_name = "RATE", value_parser = parse_rate)]
    pub(crate) rate: Option<Rate>,
    /// How many requests an idle caller may send at once (default: the rate's count).
    #[arg(long = "rate-burst", value_name = "N", requires = "rate", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) burst: Option<u32>,
    /// Each caller's requests in flight.
    #[arg(long = "concurrency-limit", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) concurrency: Option<u32>,
    /// The rate of all callers together, on top of each caller's own.
    #[arg(long = "total-rate-limit", value_name = "RATE", value_parser = parse_rate)]
    pub(crate) total: Option<Rate>,
    /// Other limits for some callers (repeatable): MATCHER=KEY=VALUE[,KEY=VALUE]... with keys
    /// rate, burst, concurrency and name (the limit's name in metrics and logs; default
    /// override-N), such as 'spiffe://example.org/batch/*=rate=1000/s,concurrency=32,name=batch'.
    /// What an override leaves unset is the default's; the most specific matcher wins.
    #[arg(long = "limit-for", value_name = "MATCHER=SPEC", value_parser = parse_override)]
    pub(crate) overrides: Vec<Override>,
}

/// One `--limit-for`.
#[derive(Debug, Clone)]
pub(crate) struct Override {
    matcher: String,
    name: Option<String>,
    limit: Limit,
}

impl LimitFlags {
    /// Whether any limit flag was given.
    pub(crate) fn any(&self) -> bool {
        self.rate.is_some()
            || self.concurrency.is_some()
            || self.total.is_some()
            || !self.overrides.is_empty()
    }

    /// The layer the flags describe, `None` without limit flags; an invalid combination is a
    /// usage error naming the limit.
    pub(crate) fn layer(&self) -> Result<Option<RateLimitLayer>, Failure> {
        if !self.any() {
            return Ok(None);
        }
        let mut builder = RateLimitLayer::builder();
        if let Some(rate) = self.rate {
            builder = builder.rate(match self.burst {
                Some(burst) => rate.burst(burst),
                None => rate,
            });
        }
        if let Some(max) = self.concurrency {
            builder = builder.concurrency(max);
        }
        if let Some(total) = self.total {
            builder = builder.total_rate(total);
        }
        for (i, o) in self.overrides.iter().enumerate() {
            let name = o
                .name
                .clone()
                .unwrap_or_else(|| format!("override-{}", i + 1));
            builder = builder.limit_for(name, o.matcher.clone(), o.limit);
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| Failure::Usage(format!("--limit-for/--rate-limit: {e}")))
    }
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    text.parse::<Rate>().map_err(|e| e.to_string())
}

/// `MATCHER=rate=R,burst=N,concurrency=N,name=NAME` (SPIFFE IDs have no `=`, so the first one
/// ends the matcher).
fn parse_override(text: &str) -> Result<Override, String> {
    let (matcher, spec) = text
        .split_once('=')
        .ok_or_else(|| "expected MATCHER=KEY=VALUE[,KEY=VALUE]...".to_owned())?;
    secure_channel::IdMatcher::parse(matcher).map_err(|e| e.to_string())?;
    let (mut rate, mut burst, mut concurrency, mut name) = (None, None, None, None);
    for pair in spec.split(',') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected KEY=VALUE"))?;
        let twice = || format!("{key} is given twice");
        match key.trim() {
            "rate" => {
                let parsed = parse_rate(value.trim())?;
                rate.replace(parsed).map_or(Ok(()), |_| Err(twice()))?;
            }
            "burst" => {
                let parsed = positive(key, value)?;
                burst.replace(parsed).map_or(Ok(()), |_| Err(twice()))?;
            }
            "concurrency" => {
                let parsed = positive(key, value)?;
                concurrency
                    .replace(parsed)
                    .map_or(Ok(()), |_| Err(twice()))?;
            }
            "name" => {
                name.replace(value.trim().to_owned())
                    .map_or(Ok(()), |_| Err(twice()))?;
            }
            other => {
                return Err(format!(
                    "unknown key {other:?}: expected rate, burst, concurrency or name"
                ));
            }
        }
    }
    let mut limit = Limit::new();
    match (rate, burst) {
        (Some(rate), Some(burst)) => limit = limit.rate(rate.burst(burst)),
        (Some(rate), None) => limit = limit.rate(rate),
        (None, Some(_)) => return Err("burst needs a rate".into()),
        (None, None) => {}
    }
    if let Some(max) = concurrency {
        limit = limit.concurrency(max);
    }
    if rate.is_none() && concurrency.is_none() {
        return Err("give a rate, a concurrency or both".into());
    }
    Ok(Override {
        matcher: matcher.to_owned(),
        name,
        limit,
    })
}

fn positive(key: &str, value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{key} must be a whole number from 1, not {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_parse_and_refuse_what_they_cannot_mean() {
        let o = parse_override(
            "spiffe://example.org/batch/*=rate=1000/s,burst=50,concurrency=32,name=batch",
        )
        .unwrap();
        assert_eq!(o.matcher, "spiffe://example.org/batch/*");
        assert_eq!(o.name.as_deref(), Some("batch"));
        assert_eq!(
            o.limit,
            Limit::new()
                .rate(Rate::per_second(1000).burst(50))
                .concurrency(32)
        );
        let o = parse_override("spiffe://example.org=concurrency=4").unwrap();
        assert_eq!(o.limit, Limit::new().concurrency(4));
        assert_eq!(o.name, None);

        for (input, problem) in [
            ("spiffe://example.org/batch/*", "expected MATCHER"),
            ("http://example.org=rate=1/s", "spiffe://"),
            ("spiffe://example.org=rate=fast", "rate"),
            ("spiffe://example.org=burst=5", "burst needs a rate"),
            ("spiffe://example.org=name=x", "give a rate"),
            ("spiffe://example.org=rate=1/s,rate=2/s", "twice"),
            ("spiffe://example.org=concurrency=0", "from 1"),
            ("spiffe://example.org=weight=3", "unknown key"),
            ("spiffe://example.org=rate", "expected KEY=VALUE"),
        ] {
            let error = parse_override(input).unwrap_err();
            assert!(error.contains(problem), "{input}: {error}");
        }
    }
}
