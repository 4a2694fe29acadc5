//! The report's chart (SVG, drawn with plotters): throughput per backend next to its bare
//! ceiling, and latency percentiles per backend, both on log scales (the in-memory backend
//! and a durable Postgres differ by orders of magnitude).

use std::path::Path;

use plotters::prelude::*;

use super::report::{POSTGRES_BARE, POSTGRES_BARE_SINGLE, Report, VALKEY_BARE, VALKEY_BARE_SINGLE};

/// One bar series: a subject and its colour.
struct Series {
    name: &'static str,
    subject: &'static str,
    color: RGBColor,
}

const SERIES: [Series; 7] = [
    Series {
        name: "memory",
        subject: "memory",
        color: RGBColor(130, 130, 130),
    },
    Series {
        name: "valkey",
        subject: "valkey",
        color: RGBColor(200, 40, 40),
    },
    Series {
        name: "valkey bare list queue, pops of 8",
        subject: VALKEY_BARE,
        color: RGBColor(245, 160, 160),
    },
    Series {
        name: "valkey bare list queue, pops of 1",
        subject: VALKEY_BARE_SINGLE,
        color: RGBColor(250, 210, 200),
    },
    Series {
        name: "postgres",
        subject: "postgres",
        color: RGBColor(40, 80, 190),
    },
    Series {
        name: "postgres bare queue, pops of 8",
        subject: POSTGRES_BARE,
        color: RGBColor(150, 180, 245),
    },
    Series {
        name: "postgres bare queue, pops of 1",
        subject: POSTGRES_BARE_SINGLE,
        color: RGBColor(205, 220, 250),
    },
];

/// `(category label, metric for a backend, metric for a ceiling)`.
type Category = (&'static str, &'static str, Option<&'static str>);

const THROUGHPUT: [Category; 3] = [
    ("flat exec/s", "flat.exec_per_s", Some("ceiling.exec_per_s")),
    ("chain node-exec/s", "chain.node_exec_per_s", None),
    ("fan-out node-exec/s", "fanout.node_exec_per_s", None),
];

const LATENCY: [Category; 8] = [
    (
        "claim→done p50",
        "flat.latency_p50_ms",
        Some("ceiling.latency_p50_ms"),
    ),
    (
        "claim→done p99",
        "flat.latency_p99_ms",
        Some("ceiling.latency_p99_ms"),
    ),
    ("hop p50", "chain.hop_p50_ms", None),
    ("hop p99", "chain.hop_p99_ms", None),
    ("probe p50", "probe.p50_ms", None),
    ("probe p99", "probe.p99_ms", None),
    ("join p50", "fanout.join_p50_ms", None),
    ("join p99", "fanout.join_p99_ms", None),
];

/// Draws the chart of `report` to `path`.
pub fn draw(report: &Report, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let (left, right) = root.split_horizontally(520);
    panel(
        report,
        &left,
        "Throughput (median of runs)",
        "per second (log)",
        &THROUGHPUT,
    )?;
    panel(
        report,
        &right,
        "Latency (median of runs; 0 not drawn)",
        "milliseconds (log)",
        &LATENCY,
    )?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {err}")
}

/// The value of `category` for `series`, if measured and positive (log scale).
fn value(report: &Report, series: &Series, category: &Category) -> Option<f64> {
    let is_ceiling = [
        VALKEY_BARE,
        VALKEY_BARE_SINGLE,
        POSTGRES_BARE,
        POSTGRES_BARE_SINGLE,
    ]
    .contains(&series.subject);
    let metric = if is_ceiling { category.2? } else { category.1 };
    let v = report.figure(series.subject, metric)?.median;
    (v > 0.0).then_some(v)
}

/// A grouped bar chart: one group per category, one bar per series that has a value.
fn panel<DB: DrawingBackend>(
    report: &Report,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    categories: &[Category],
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let series: Vec<&Series> = SERIES
        .iter()
        .filter(|s| categories.iter().any(|c| value(report, s, c).is_some()))
        .collect();
    let values: Vec<f64> = series
        .iter()
        .flat_map(|s| categories.iter().filter_map(|c| value(report, s, c)))
        .collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let (lo, hi) = if values.is_empty() {
        (0.1, 10.0)
    } else {
        (
            10f64.powf((lo / 2.0).log10().floor()),
            // Headroom above the tallest bar (four decades) for the legend.
            10f64.powf((hi * 1e4).log10().ceil()),
        )
    };
    let n = categories.len();
    let labels: Vec<&str> = categories.iter().map(|c| c.0).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(70)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n as f64, (lo..hi).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2 * n + 1)
        .x_label_formatter(&|x| {
            let centre = x - 0.5;
            if (centre - centre.round()).abs() < 1e-6 && centre >= 0.0 {
                labels
                    .get(centre.round() as usize)
                    .map_or_else(String::new, |l| (*l).to_owned())
            } else {
                String::new()
            }
        })
        .x_label_style(("sans-serif", 13))
        .y_desc(y_desc)
        .y_label_formatter(&|y| super::report::number(*y))
        .draw()
        .map_err(plot_error)?;

    let slot = 0.8 / series.len().max(1) as f64;
    for (si, s) in series.iter().enumerate() {
        let color = s.color;
        let bars: Vec<Rectangle<(f64, f64)>> = categories
            .iter()
            .enumerate()
            .filter_map(|(ci, c)| {
                let v = value(report, s, c)?;
                let x0 = ci as f64 + 0.1 + si as f64 * slot;
                Some(Rectangle::new(
                    [(x0, lo), (x0 + slot * 0.9, v)],
                    color.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(plot_error)?
            .label(s.name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}
