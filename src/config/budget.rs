//! The compute budget of a run: wall-clock time, tokens, FLOPs or optimizer
//! steps. Every schedule is a function of the fraction of it that is spent.

use std::fmt;

/// `train.budget` as the user wrote it ("24h", "1e18 flops") and as parsed.
/// A config holds it checked once, when the config is read, and keeps the
/// user's words for `config.toml` and messages.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BudgetSetting {
    text: String,
    parsed: Budget,
}

impl BudgetSetting {
    pub fn parse(text: &str) -> Result<BudgetSetting, String> {
        Ok(BudgetSetting {
            parsed: Budget::parse(text)?,
            text: text.to_string(),
        })
    }

    pub fn get(&self) -> Budget {
        self.parsed
    }
}

impl TryFrom<String> for BudgetSetting {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        BudgetSetting::parse(&text).map_err(|e| format!("train.budget: {e}"))
    }
}

impl From<BudgetSetting> for String {
    fn from(b: BudgetSetting) -> String {
        b.text
    }
}

impl fmt::Display for BudgetSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    Seconds(f64),
    Tokens(f64),
    Flops(f64),
    Steps(u64),
}

impl Budget {
    /// Parses "90s", "30m", "1.5h", "24h", "2d", "50M tokens", "1e18 flops", "500 steps".
    /// Suffixes are case-insensitive, spaces optional; K/M/G/B/T multiply tokens.
    pub fn parse(text: &str) -> Result<Budget, String> {
        let t = text.trim().to_ascii_lowercase().replace([' ', '_'], "");
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '+' || c == '-'))
            .unwrap_or(t.len());
        // "1e18flops": the 'e' of the exponent is part of the number, the unit starts later.
        let (num, unit) = t.split_at(split);
        let (num, unit) = match num.strip_suffix('e') {
            Some(mantissa) => (mantissa, &t[split - 1..]),
            None => (num, unit),
        };
        let value: f64 = num.parse().map_err(|_| bad_budget(text))?;
        let (scale, unit) = match unit.chars().next() {
            Some('k') if unit.len() > 1 => (1e3, &unit[1..]),
            Some('m') if unit.len() > 1 && !unit.starts_with("min") => (1e6, &unit[1..]),
            Some('g') if unit.len() > 1 => (1e9, &unit[1..]),
            Some('b') if unit.len() > 1 => (1e9, &unit[1..]),
            Some('t') if unit.len() > 1 && !unit.starts_with("tok") => (1e12, &unit[1..]),
            Some('p') if unit.len() > 1 => (1e15, &unit[1..]),
            _ => (1.0, unit),
        };
        let budget = match unit {
            "s" | "sec" | "secs" | "seconds" if scale == 1.0 => Budget::Seconds(value),
            "m" | "min" | "mins" | "minutes" if scale == 1.0 => Budget::Seconds(value * 60.0),
            "h" | "hour" | "hours" if scale == 1.0 => Budget::Seconds(value * 3600.0),
            "d" | "day" | "days" if scale == 1.0 => Budget::Seconds(value * 86400.0),
            "tok" | "toks" | "token" | "tokens" => Budget::Tokens(value * scale),
            "flop" | "flops" => Budget::Flops(value * scale),
            "step" | "steps" if scale == 1.0 && value.fract() == 0.0 => Budget::Steps(value as u64),
            _ => return Err(bad_budget(text)),
        };
        if !budget.amount().is_finite() || budget.amount() <= 0.0 {
            return Err(format!("budget '{text}' must be positive"));
        }
        Ok(budget)
    }

    fn amount(&self) -> f64 {
        match *self {
            Budget::Seconds(v) | Budget::Tokens(v) | Budget::Flops(v) => v,
            Budget::Steps(s) => s as f64,
        }
    }

    /// Twice this budget, written as `--budget` takes it (quoted when it holds
    /// a space): the example an error gives for training a finished run on.
    pub fn doubled(&self) -> String {
        let whole = |x: f64| {
            if x.fract() == 0.0 && x < 1e15 {
                format!("{}", x as u64)
            } else {
                format!("{x:e}")
            }
        };
        match self {
            Budget::Seconds(s) => format!("{}s", whole(2.0 * s)),
            Budget::Tokens(t) => format!("\"{} tokens\"", whole(2.0 * t)),
            Budget::Flops(f) => format!("\"{:e} flops\"", 2.0 * f),
            Budget::Steps(n) => format!("\"{} steps\"", 2 * n),
        }
    }

    /// Fraction of the budget spent, clamped to [0, 1].
    pub fn progress(&self, spent: &Spent) -> f64 {
        self.used(spent).clamp(0.0, 1.0)
    }

    pub fn is_wall_clock(&self) -> bool {
        matches!(self, Budget::Seconds(_))
    }

    /// How many times the budget `spent` holds, unclamped (1.0: all of it;
    /// past 1.0 when the last step overran it).
    pub fn used(&self, spent: &Spent) -> f64 {
        let used = match self {
            Budget::Seconds(_) => spent.seconds,
            Budget::Tokens(_) => spent.tokens as f64,
            Budget::Flops(_) => spent.flops,
            Budget::Steps(_) => spent.steps as f64,
        };
        used / self.amount()
    }
}

/// What a run has used so far, in every unit a budget can be given in.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spent {
    pub seconds: f64,
    pub tokens: u64,
    pub flops: f64,
    pub steps: u64,
}

fn bad_budget(text: &str) -> String {
    format!(
        "cannot read budget '{text}'; write a time (90s, 30m, 1.5h, 24h), tokens (50M tokens), \
         FLOPs (1e18 flops) or steps (500 steps)"
    )
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Budget::Seconds(s) if s >= 3600.0 => write!(f, "{}h", s / 3600.0),
            Budget::Seconds(s) => write!(f, "{s}s"),
            Budget::Tokens(t) => write!(f, "{t:.3e} tokens"),
            Budget::Flops(x) => write!(f, "{x:.3e} FLOPs"),
            Budget::Steps(s) => write!(f, "{s} steps"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(Budget::parse("90s"), Ok(Budget::Seconds(90.0)));
        assert_eq!(Budget::parse("30m"), Ok(Budget::Seconds(1800.0)));
        assert_eq!(Budget::parse("1.5h"), Ok(Budget::Seconds(5400.0)));
        assert_eq!(Budget::parse("24h"), Ok(Budget::Seconds(86400.0)));
        assert_eq!(Budget::parse("50M tokens"), Ok(Budget::Tokens(50e6)));
        assert_eq!(Budget::parse("2e6tok"), Ok(Budget::Tokens(2e6)));
        assert_eq!(Budget::parse("1e18 FLOPs"), Ok(Budget::Flops(1e18)));
        assert_eq!(Budget::parse("3 PFLOP"), Ok(Budget::Flops(3e15)));
        assert_eq!(Budget::parse("500 steps"), Ok(Budget::Steps(500)));
    }

    #[test]
    fn rejects_zero_and_nonsense() {
        for bad in [
            "0s",
            "0h",
            "-1h",
            "soon",
            "",
            "12",
            "1.5 steps",
            "5 parsecs",
        ] {
            assert!(Budget::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn progress_is_clamped_fraction() {
        let b = Budget::parse("100 steps").unwrap();
        let spent = Spent {
            steps: 25,
            ..Spent::default()
        };
        assert_eq!(b.progress(&spent), 0.25);
        let spent = Spent {
            steps: 250,
            ..Spent::default()
        };
        assert_eq!(b.progress(&spent), 1.0);
    }
}
