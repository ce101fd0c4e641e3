//! The Prometheus text exposition format (version 0.0.4), written by hand: a handful of
//! families rendered at scrape time need no metrics library. Label values are escaped here, so
//! callers pass plain strings.

use std::fmt::Write;

/// The content type of a scrape response.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type, as written in its `# TYPE` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Counter => "counter",
            Type::Gauge => "gauge",
            Type::Histogram => "histogram",
        }
    }
}

/// One scrape's text, built family by family: a family's header, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Type, help: &str) {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// The samples of one histogram series: `counts[i]` observations fell at or under
    /// `bounds[i]` and above the bound before (not cumulative); `count` counts them all,
    /// including those above the last bound.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
        count: u64,
    ) {
        let mut cumulative = 0;
        for (bound, observed) in bounds.iter().zip(counts) {
            cumulative += observed;
            self.out.push_str(name);
            self.out.push_str("_bucket");
            self.labels(labels, Some(("le", &number(*bound))));
            let _ = writeln!(self.out, " {cumulative}");
        }
        self.out.push_str(name);
        self.out.push_str("_bucket");
        self.labels(labels, Some(("le", "+Inf")));
        let _ = writeln!(self.out, " {count}");
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }

    fn labels(&mut self, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_none() {
            return;
        }
        self.out.push('{');
        for (index, (label, value)) in all.enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{label}=\"{}\"", escape(value));
        }
        self.out.push('}');
    }
}

/// A label value with backslash, double quote and line feed escaped, as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// A sample value: integers without a fraction, infinities as Prometheus spells them.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_their_header_and_samples() {
        let mut text = Exposition::new();
        text.family("shops", Type::Gauge, "Shops by condition.");
        text.sample("shops", &[("condition", "ready")], 3.0);
        text.sample("shops", &[], 0.5);
        text.family("calls_total", Type::Counter, "Calls.");
        text.sample("calls_total", &[("service", "s3"), ("outcome", "ok")], 12.0);

        let expected = "\
# HELP shops Shops by condition.
# TYPE shops gauge
shops{condition=\"ready\"} 3
shops 0.5
# HELP calls_total Calls.
# TYPE calls_total counter
calls_total{service=\"s3\",outcome=\"ok\"} 12
";
        assert_eq!(text.finish(), expected);
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_sum_and_count() {
        let mut text = Exposition::new();
        text.family("took_seconds", Type::Histogram, "How long.");
        text.histogram(
            "took_seconds",
            &[("kind", "listener")],
            &[0.1, 1.0],
            &[2, 3],
            4.25,
            6,
        );

        let expected = "\
# HELP took_seconds How long.
# TYPE took_seconds histogram
took_seconds_bucket{kind=\"listener\",le=\"0.1\"} 2
took_seconds_bucket{kind=\"listener\",le=\"1\"} 5
took_seconds_bucket{kind=\"listener\",le=\"+Inf\"} 6
took_seconds_sum{kind=\"listener\"} 4.25
took_seconds_count{kind=\"listener\"} 6
";
        assert_eq!(text.finish(), expected);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let cases = [
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("back\\slash", "back\\\\slash"),
            ("two\nlines", "two\\nlines"),
        ];
        for (value, escaped) in cases {
            let mut text = Exposition::new();
            text.sample("m", &[("l", value)], 1.0);
            assert_eq!(
                text.finish(),
                format!("m{{l=\"{escaped}\"}} 1\n"),
                "{value:?}"
            );
        }

        let mut text = Exposition::new();
        text.family("m", Type::Gauge, "one\ntwo");
        assert!(text.finish().starts_with("# HELP m one\\ntwo\n"));
    }

    #[test]
    fn numbers_are_spelled_as_prometheus_reads_them() {
        let cases = [
            (0.0, "0"),
            (7.0, "7"),
            (0.005, "0.005"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ];
        for (value, spelled) in cases {
            assert_eq!(number(value), spelled, "{value}");
        }
    }
}
