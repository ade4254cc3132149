//! Percentile plot as SVG: x is the percentile on a log scale of 1/(1 − p) (so 90, 99, 99.9 …
//! are evenly spaced, as in HdrHistogram plots), y the latency (log scale, ms). Several runs
//! on one plot when comparing.

use std::fmt::Write;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_BOTTOM: f64 = 60.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_RIGHT: f64 = 200.0;
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// x position of a percentile (0..100).
fn x_of(percentile: f64) -> f64 {
    let nines = -(1.0 - percentile / 100.0).max(1e-5).log10(); // 0 … 5
    MARGIN_LEFT + nines / 5.0 * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
}

/// `series`: (label, points of (percentile, latency µs)).
pub fn percentile_plot(title: &str, series: &[(String, Vec<(f64, u64)>)]) -> String {
    let max_us = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .max()
        .unwrap_or(1)
        .max(10);
    let min_us = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .min()
        .unwrap_or(1)
        .max(1);
    let (lo, hi) = (
        (min_us as f64).log10().floor(),
        (max_us as f64)
            .log10()
            .ceil()
            .max((min_us as f64).log10().floor() + 1.0),
    );
    let y_of = |us: u64| {
        let v = (us.max(1) as f64).log10();
        HEIGHT - MARGIN_BOTTOM - (v - lo) / (hi - lo) * (HEIGHT - MARGIN_BOTTOM - MARGIN_TOP)
    };
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>
"#,
        WIDTH / 2.0,
        escape(title)
    );
    for (label, percentile) in [
        ("0", 0.0),
        ("90", 90.0),
        ("99", 99.0),
        ("99.9", 99.9),
        ("99.99", 99.99),
        ("99.999", 99.999),
    ] {
        let x = x_of(percentile);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            HEIGHT - MARGIN_BOTTOM,
            HEIGHT - MARGIN_BOTTOM + 18.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let us = 10f64.powf(decade) as u64;
        let y = y_of(us);
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - MARGIN_RIGHT,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            crate::stats::fmt_us(us)
        );
        decade += 1.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text><text x="18" y="{:.1}" transform="rotate(-90 18 {:.1})" text-anchor="middle">latency</text>"#,
        (MARGIN_LEFT + WIDTH - MARGIN_RIGHT) / 2.0,
        HEIGHT - 14.0,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    for (i, (label, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(p, us)| format!("{:.1},{:.1}", x_of(*p), y_of(*us)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = MARGIN_TOP + 20.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            WIDTH - MARGIN_RIGHT + 12.0,
            ly,
            WIDTH - MARGIN_RIGHT + 32.0,
            ly + 6.0,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_series_with_a_legend() {
        let series = vec![
            (
                "thruster <a>".to_string(),
                vec![(0.0, 100), (99.0, 1_000), (99.999, 50_000)],
            ),
            ("other".to_string(), vec![(0.0, 200), (99.9, 9_000)]),
        ];
        let svg = percentile_plot("e2e", &series);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("thruster &lt;a&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(x_of(99.0) < x_of(99.9));
    }
}
