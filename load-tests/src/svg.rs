//! Small, dependency-free SVG charts for the report: bars and a lock timeline.

use std::fmt::Write;

const WIDTH: f64 = 760.0;
const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(height: f64, title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">{}</text>\n",
        WIDTH / 2.0,
        escape(title)
    )
}

/// Horizontal bars: one per (label, value), with the value printed.
pub fn bars(title: &str, unit: &str, rows: &[(String, f64)]) -> String {
    let row_height = 28.0;
    let height = 50.0 + row_height * rows.len() as f64 + 10.0;
    let max = rows
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let (left, right) = (150.0, WIDTH - 110.0);
    let mut svg = header(height, title);
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = 45.0 + row_height * i as f64;
        let width = (right - left) * value / max;
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{left}\" y=\"{y}\" width=\"{width:.1}\" height=\"{}\" fill=\"{}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{} {}</text>\n",
            left - 8.0,
            y + 15.0,
            escape(label),
            row_height - 8.0,
            COLORS[i % COLORS.len()],
            left + width + 6.0,
            y + 15.0,
            format_value(*value),
            escape(unit)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Pairs of bars per label (e.g. p50 and p99 latency per strategy).
pub fn paired_bars(
    title: &str,
    unit: &str,
    series: [&str; 2],
    rows: &[(String, f64, f64)],
) -> String {
    let row_height = 40.0;
    let height = 70.0 + row_height * rows.len() as f64;
    let max = rows
        .iter()
        .map(|(_, a, b)| a.max(*b))
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let (left, right) = (150.0, WIDTH - 110.0);
    let mut svg = header(height, title);
    for (s, name) in series.iter().enumerate() {
        let x = left + 160.0 * s as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"34\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"45\">{}</text>",
            COLORS[s],
            x + 18.0,
            escape(name)
        );
    }
    for (i, (label, a, b)) in rows.iter().enumerate() {
        let y = 60.0 + row_height * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 17.0,
            escape(label)
        );
        for (s, value) in [a, b].into_iter().enumerate() {
            let width = (right - left) * value / max;
            let bar_y = y + 16.0 * s as f64;
            let _ = writeln!(
                svg,
                "<rect x=\"{left}\" y=\"{bar_y}\" width=\"{width:.1}\" height=\"14\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\">{} {}</text>",
                COLORS[s],
                left + width + 6.0,
                bar_y + 12.0,
                format_value(*value),
                escape(unit)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

/// One lane per instance, one bar per hold (start..end in µs): holds of one resource must never
/// overlap, so no two bars, in any lanes, share a moment.
pub fn timeline(title: &str, lanes: &[(String, Vec<(i64, i64)>)]) -> String {
    let lane_height = 46.0;
    let height = 60.0 + lane_height * lanes.len() as f64 + 30.0;
    let (left, right) = (80.0, WIDTH - 20.0);
    let start = lanes
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|b| b.0))
        .min()
        .unwrap_or(0);
    let end = lanes
        .iter()
        .flat_map(|(_, bars)| bars.iter().map(|b| b.1))
        .max()
        .unwrap_or(1)
        .max(start + 1);
    let scale = (right - left) / (end - start) as f64;
    let mut svg = header(height, title);
    for (i, (name, bars)) in lanes.iter().enumerate() {
        let y = 45.0 + lane_height * i as f64;
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><line x1=\"{left}\" x2=\"{right}\" y1=\"{}\" y2=\"{}\" stroke=\"#ddd\"/>",
            left - 8.0,
            y + lane_height / 2.0,
            escape(name),
            y + lane_height - 4.0,
            y + lane_height - 4.0
        );
        for (from, to) in bars {
            let x = left + (from - start) as f64 * scale;
            let width = ((to - from) as f64 * scale).max(0.3);
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.2}\" y=\"{}\" width=\"{width:.2}\" height=\"{}\" fill=\"{}\"/>",
                y + 6.0,
                lane_height - 14.0,
                COLORS[i % COLORS.len()]
            );
        }
    }
    let axis_y = 45.0 + lane_height * lanes.len() as f64 + 16.0;
    let span_ms = (end - start) as f64 / 1000.0;
    let _ = writeln!(
        svg,
        "<text x=\"{left}\" y=\"{axis_y}\">0 ms</text><text x=\"{right}\" y=\"{axis_y}\" text-anchor=\"end\">{span_ms:.1} ms</text>"
    );
    svg.push_str("</svg>\n");
    svg
}

fn format_value(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
