//! Small, dependency-free SVG charts for the report: bars, a lock timeline, and rates over time
//! with a fault window shaded (the chaos drills).

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

/// Colours for good and bad answers in [`over_time`].
pub const GREEN: &str = "#59a14f";
pub const RED: &str = "#e15759";

/// Per-second rates over time: one line per series (label, colour, one value per second from
/// the run's start), with `shade` (from, to in seconds) drawn as a grey band labelled `fault`.
pub fn over_time(
    title: &str,
    unit: &str,
    series: &[(&str, &str, &[f64])],
    shade: Option<(f64, f64)>,
) -> String {
    let height = 320.0;
    let (left, right, top, bottom) = (64.0, WIDTH - 20.0, 62.0, height - 40.0);
    let seconds = series
        .iter()
        .map(|(_, _, values)| values.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let peak = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().copied())
        .fold(0.0_f64, f64::max);
    let max = nice_ceiling(peak);
    let x = |second: f64| left + (right - left) * second / seconds;
    let y = |value: f64| bottom - (bottom - top) * value / max;
    let mut svg = header(height, title);
    if let Some((from, to)) = shade {
        let (from, to) = (from.clamp(0.0, seconds), to.clamp(0.0, seconds));
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{}\" fill=\"#888\" fill-opacity=\"0.18\"/><text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" fill=\"#555\">fault</text>",
            x(from),
            (x(to) - x(from)).max(1.0),
            bottom - top,
            (x(from) + x(to)) / 2.0,
            top + 14.0
        );
    }
    for tick in 0..=4 {
        let value = max * f64::from(tick) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" x2=\"{right}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{1}\" y=\"{2:.1}\" text-anchor=\"end\">{3}</text>",
            y(value),
            left - 6.0,
            y(value) + 4.0,
            if value.fract() == 0.0 {
                format!("{value:.0}")
            } else {
                format_value(value)
            }
        );
    }
    let step = if seconds > 60.0 { 10 } else { 5 };
    for second in (0..=seconds as usize).step_by(step) {
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{second} s</text>",
            x(second as f64),
            bottom + 16.0
        );
    }
    let middle = (top + bottom) / 2.0;
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" x2=\"{right}\" y1=\"{bottom}\" y2=\"{bottom}\" stroke=\"#333\"/><text x=\"16\" y=\"{middle}\" transform=\"rotate(-90 16 {middle})\" text-anchor=\"middle\">{}</text>",
        escape(unit)
    );
    for (i, (label, color, values)) in series.iter().enumerate() {
        let legend_x = left + 140.0 * i as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{legend_x}\" y=\"34\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{}\" y=\"45\">{}</text>",
            legend_x + 18.0,
            escape(label)
        );
        // One point per second, at the middle of its second.
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(second, value)| format!("{:.1},{:.1}", x(second as f64 + 0.5), y(*value)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>",
            points.join(" ")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest of 1, 2, 5 × 10^k at or above `value` (at least 1): a round top for an axis.
fn nice_ceiling(value: f64) -> f64 {
    let mut magnitude = 1.0;
    // Bounded: f64 tops out near 10^308.
    for _ in 0..320 {
        for factor in [1.0, 2.0, 5.0] {
            if factor * magnitude >= value {
                return factor * magnitude;
            }
        }
        magnitude *= 10.0;
    }
    value
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
