//! Charts as SVG documents, drawn with plotters: [`line`] (trends), [`bars`] (channel mix,
//! segments, basket sizes), [`heatmap`] (hour × weekday, cohort triangle), and
//! [`from_table`] to draw a named query's result as its header says.
//!
//! Values are exact decimals everywhere else; here they become pixel positions, the only
//! floating-point arithmetic in posledger.
#![allow(clippy::float_arithmetic)]

use std::collections::HashMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use queries::ChartSpec;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::table::{Cell, Table};

/// Most series a line chart draws (the rest are left out; the table has them all).
pub const CHART_SERIES_MAX: usize = 8;
/// Most categories a bar chart or heat-map axis draws.
pub const CHART_CATEGORIES_MAX: usize = 200;

const SIZE: (u32, u32) = (960, 540);

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// Bad input: the result lacks a column the chart needs, or holds a non-number there.
    #[error("chart: {0}")]
    Data(String),
    /// plotters failed (a defect).
    #[error("drawing the chart: {0}")]
    Draw(String),
}

fn draw_err<E: std::fmt::Debug>(e: E) -> ChartError {
    ChartError::Draw(format!("{e:?}"))
}

fn pixels(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// The range a set of values is drawn in: from zero (or below, for negative values) to a
/// little above the largest.
fn span(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if (hi - lo).abs() < f64::EPSILON {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    (if lo < 0.0 { lo - pad } else { lo })..hi + pad
}

/// Every chart's frame: the title, margins, and room for the axes' labels (`y_labels`
/// pixels wide on the left).
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
    y_labels: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 22)).margin(16).x_label_area_size(48).y_label_area_size(y_labels);
    builder
}

/// Names the centre of each category segment of an axis.
fn category(names: &[String]) -> impl Fn(&SegmentValue<i32>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
        _ => String::new(),
    }
}

fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ChartError>) -> Result<String, ChartError> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(text)
}

/// One line per series over the categories `x`, broken where a series has no value; `marks`
/// (series, x index) are circled, as the trend's anomalies are.
pub fn line(
    title: &str,
    x: &[String],
    series: &[(String, Vec<Option<Decimal>>)],
    marks: &[(usize, usize)],
) -> Result<String, ChartError> {
    let series = &series[..series.len().min(CHART_SERIES_MAX)];
    let last = x.len().saturating_sub(1).max(1) as f64;
    let range = span(series.iter().flat_map(|(_, v)| v.iter().flatten().map(|d| pixels(*d))));
    svg(|root| {
        let mut chart = frame(root, title, 80).build_cartesian_2d(-0.2f64..last + 0.2, range).map_err(draw_err)?;
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                x.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_labels(x.len().clamp(2, 12))
            .x_label_formatter(&label)
            .disable_x_mesh()
            .draw()
            .map_err(draw_err)?;
        for (index, (name, values)) in series.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            // Each unbroken stretch of values is a line of its own; the first carries the legend.
            let mut stretches: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for (i, v) in values.iter().enumerate() {
                match v {
                    Some(v) => stretches.last_mut().expect("one stretch").push((i as f64, pixels(*v))),
                    None if stretches.last().is_some_and(|s| !s.is_empty()) => stretches.push(Vec::new()),
                    None => {}
                }
            }
            stretches.retain(|s| !s.is_empty());
            if stretches.is_empty() {
                // No value at all: the series is still named in the legend.
                stretches.push(Vec::new());
            }
            for (n, stretch) in stretches.into_iter().enumerate() {
                // A lone value has no line to sit on: it is drawn as a dot.
                let dot = (stretch.len() == 1).then(|| Circle::new(stretch[0], 3, colour.filled()));
                let drawn = chart.draw_series(LineSeries::new(stretch, colour.stroke_width(2))).map_err(draw_err)?;
                if n == 0 {
                    drawn.label(name.as_str()).legend(move |(px, py)| {
                        PathElement::new(vec![(px, py), (px + 20, py)], colour.stroke_width(2))
                    });
                }
                chart.draw_series(dot).map_err(draw_err)?;
            }
        }
        let circled = marks.iter().filter_map(|(s, i)| {
            let v = (*series.get(*s)?.1.get(*i)?)?;
            Some(Circle::new((*i as f64, pixels(v)), 6, RED.stroke_width(2)))
        });
        chart.draw_series(circled).map_err(draw_err)?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}

/// One bar per label.
pub fn bars(title: &str, labels: &[String], values: &[Decimal]) -> Result<String, ChartError> {
    let n = labels.len().min(values.len()).min(CHART_CATEGORIES_MAX);
    let range = span(values[..n].iter().map(|d| pixels(*d)));
    svg(|root| {
        let mut chart =
            frame(root, title, 80).build_cartesian_2d((0..n as i32).into_segmented(), range).map_err(draw_err)?;
        let label = category(labels);
        chart
            .configure_mesh()
            .x_labels(n.max(1))
            .x_label_formatter(&label)
            .disable_x_mesh()
            .draw()
            .map_err(draw_err)?;
        let colour = Palette99::pick(0).to_rgba();
        chart
            .draw_series(values[..n].iter().enumerate().map(|(i, v)| {
                let i = i as i32;
                let mut bar = Rectangle::new(
                    [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), pixels(*v))],
                    colour.filled(),
                );
                bar.set_margin(0, 0, 6, 6);
                bar
            }))
            .map_err(draw_err)?;
        Ok(())
    })
}

/// A grid of cells (`cells[y][x]`, `None` for no value) shaded from white (zero) to blue
/// (the largest value), each cell labelled with its value.
pub fn heatmap(title: &str, x: &[String], y: &[String], cells: &[Vec<Option<Decimal>>]) -> Result<String, ChartError> {
    let (nx, ny) = (x.len().min(CHART_CATEGORIES_MAX), y.len().min(CHART_CATEGORIES_MAX));
    let top = cells.iter().flatten().flatten().map(|d| pixels(*d)).fold(0.0f64, f64::max);
    svg(|root| {
        let mut chart = frame(root, title, 100)
            .build_cartesian_2d((0..nx as i32).into_segmented(), (0..ny as i32).into_segmented())
            .map_err(draw_err)?;
        let (x_label, y_label) = (category(x), category(y));
        chart
            .configure_mesh()
            .x_labels(nx.max(1))
            .y_labels(ny.max(1))
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .disable_mesh()
            .draw()
            .map_err(draw_err)?;
        let mut shaded = Vec::new();
        let mut labels = Vec::new();
        for (yi, row) in cells.iter().enumerate().take(ny) {
            for (xi, value) in row.iter().enumerate().take(nx) {
                let Some(value) = value else { continue };
                let share = if top > 0.0 { (pixels(*value) / top).clamp(0.0, 1.0) } else { 0.0 };
                let fade = |full: f64| (255.0 - (255.0 - full) * share) as u8;
                let colour = RGBColor(fade(33.0), fade(102.0), fade(172.0));
                let (cx, cy) = (xi as i32, yi as i32);
                shaded.push(Rectangle::new(
                    [
                        (SegmentValue::Exact(cx), SegmentValue::Exact(cy)),
                        (SegmentValue::Exact(cx + 1), SegmentValue::Exact(cy + 1)),
                    ],
                    colour.filled(),
                ));
                let ink = if share > 0.6 { WHITE } else { BLACK };
                labels.push(Text::new(
                    value.to_string(),
                    (SegmentValue::CenterOf(cx), SegmentValue::CenterOf(cy)),
                    ("sans-serif", 11).into_font().color(&ink).pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    )),
                ));
            }
        }
        chart.draw_series(shaded).map_err(draw_err)?;
        chart.draw_series(labels).map_err(draw_err)?;
        Ok(())
    })
}

/// A named query's result drawn as its header's `chart` says.
pub fn from_table(spec: &ChartSpec, table: &Table, title: &str) -> Result<String, ChartError> {
    let index =
        |name: &str| table.column(name).ok_or_else(|| ChartError::Data(format!("the result has no column {name:?}")));
    let number = |cell: &Cell, name: &str| match cell {
        Cell::Decimal(d) => Ok(Some(*d)),
        Cell::Int(i) => Ok(Some(Decimal::from_i128_with_scale(*i, 0))),
        Cell::Null => Ok(None),
        other => Err(ChartError::Data(format!("column {name:?} holds {other}, not a number"))),
    };
    // A result with amounts in more than one currency draws each currency apart: a line per
    // currency, bars labelled with theirs. A heat map's counts add up across currencies.
    let currency = table.column("currency");
    let currencies: Vec<String> = match currency {
        Some(ci) => {
            let mut all: Vec<String> = table.rows.iter().map(|r| r[ci].to_string()).collect();
            all.sort();
            all.dedup();
            all
        }
        None => Vec::new(),
    };
    let apart = currencies.len() > 1;
    match spec {
        ChartSpec::Line { x, y } => {
            // One point per x: the rows that share it (a day's merchants and channels) add up,
            // each currency apart.
            let (xi, yi) = (index(x)?, index(y)?);
            let ci = currency.filter(|_| apart);
            // Each row's x label and currency, found once: labels in their first order.
            let mut labels: Vec<String> = Vec::new();
            let mut label_at: HashMap<String, usize> = HashMap::new();
            let mut placed = Vec::with_capacity(table.rows.len());
            for r in &table.rows {
                let label = r[xi].to_string();
                let at = *label_at.entry(label.clone()).or_insert_with(|| {
                    labels.push(label);
                    labels.len() - 1
                });
                let s = ci.map_or(0, |ci| currencies.binary_search(&r[ci].to_string()).unwrap_or_default());
                placed.push((at, s));
            }
            // A currency without a row at some x has no value there: its line breaks.
            let names: Vec<String> =
                if apart { currencies.iter().map(|c| format!("{y} {c}")).collect() } else { vec![y.clone()] };
            let mut series: Vec<(String, Vec<Option<Decimal>>)> =
                names.into_iter().map(|n| (n, vec![None; labels.len()])).collect();
            for (r, (at, s)) in table.rows.iter().zip(placed) {
                if let Some(v) = number(&r[yi], y)? {
                    *series[s].1[at].get_or_insert(Decimal::ZERO) += v;
                }
            }
            line(title, &labels, &series, &[])
        }
        ChartSpec::Bars { x, y } => {
            let (xi, yi) = (index(x)?, index(y)?);
            let labels: Vec<String> = table
                .rows
                .iter()
                .map(|r| match currency {
                    Some(ci) if apart => format!("{} {}", r[xi], r[ci]),
                    _ => r[xi].to_string(),
                })
                .collect();
            let values =
                table.rows.iter().map(|r| Ok(number(&r[yi], y)?.unwrap_or_default())).collect::<Result<Vec<_>, _>>()?;
            bars(title, &labels, &values)
        }
        ChartSpec::Heatmap { x, y, value } => {
            let (xi, yi, vi) = (index(x)?, index(y)?, index(value)?);
            let mut xs: Vec<Cell> = table.rows.iter().map(|r| r[xi].clone()).collect();
            let mut ys: Vec<Cell> = table.rows.iter().map(|r| r[yi].clone()).collect();
            xs.sort();
            xs.dedup();
            ys.sort();
            ys.dedup();
            let mut cells: Vec<Vec<Option<Decimal>>> = vec![vec![None; xs.len()]; ys.len()];
            for r in &table.rows {
                let (Ok(cx), Ok(cy)) = (xs.binary_search(&r[xi]), ys.binary_search(&r[yi])) else { continue };
                if let Some(v) = number(&r[vi], value)? {
                    *cells[cy][cx].get_or_insert(Decimal::ZERO) += v;
                }
            }
            let names = |cells: &[Cell]| cells.iter().map(ToString::to_string).collect::<Vec<_>>();
            heatmap(title, &names(&xs), &names(&ys), &cells)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(v: i64) -> Decimal {
        Decimal::from(v)
    }

    fn parse(svg: &str) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(svg).expect("the SVG is well-formed XML")
    }

    fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
            .collect()
    }

    #[test]
    fn a_line_chart_holds_one_polyline_per_series_with_every_point() {
        // Two series of four points each, their names in the legend, one mark circled.
        let x: Vec<String> = ["W1", "W2", "W3", "W4"].map(String::from).to_vec();
        let some = |v: [i64; 4]| v.map(|n| Some(d(n))).to_vec();
        let series = vec![("M1".to_owned(), some([10, 20, 5, 40])), ("M2".to_owned(), some([-3, 0, 7, 1]))];
        let text = line("Net sales per week", &x, &series, &[(0, 2)]);
        let text = text.expect("drawn");
        let doc = parse(&text);
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let lines: Vec<usize> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .map(|n| n.attribute("points").unwrap_or_default().split_whitespace().count())
            .collect();
        assert!(lines.iter().filter(|n| **n == 4).count() >= 2, "{lines:?}");
        let labels = texts(&doc);
        for want in ["Net sales per week", "M1", "M2", "W1", "W4"] {
            assert!(labels.iter().any(|t| t == want), "{want} in {labels:?}");
        }
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("circle")).count(), 1);
    }

    #[test]
    fn a_bar_chart_holds_one_bar_per_category() {
        // Bars are the filled rectangles other than the white background.
        let labels: Vec<String> = ["wechat", "alipay", "cash"].map(String::from).to_vec();
        let text = bars("Channel mix", &labels, &[d(480), d(90), d(20)]).expect("drawn");
        let doc = parse(&text);
        let filled: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| n.attribute("fill").is_some_and(|f| !f.eq_ignore_ascii_case("#FFFFFF")))
            .collect();
        assert_eq!(filled.len(), 3);
        let heights: Vec<f64> =
            filled.iter().map(|n| n.attribute("height").and_then(|h| h.parse().ok()).unwrap_or(0.0)).collect();
        assert!(heights[0] > heights[1] && heights[1] > heights[2], "{heights:?}");
        assert!(texts(&doc).iter().any(|t| t == "alipay"));
    }

    #[test]
    fn a_heatmap_table_draws_every_cell_with_its_value() {
        // hour × weekday: three cells with values, one missing.
        let mut table = Table::new(["local_hour", "weekday", "payments"]);
        for (h, w, n) in [(9, 1, 3), (12, 1, 3), (9, 2, 1)] {
            table.rows.push(vec![Cell::Int(h), Cell::Int(w), Cell::Int(n)]);
        }
        let spec = ChartSpec::Heatmap { x: "local_hour".into(), y: "weekday".into(), value: "payments".into() };
        let text = from_table(&spec, &table, "When customers pay").expect("drawn");
        let doc = parse(&text);
        let cells = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| n.attribute("fill").is_some_and(|f| !f.eq_ignore_ascii_case("#FFFFFF")))
            .count();
        assert_eq!(cells, 3);
        let labels = texts(&doc);
        assert_eq!(labels.iter().filter(|t| *t == "3").count(), 2, "{labels:?}");
        let missing = ChartSpec::Bars { x: "channel".into(), y: "payments".into() };
        assert!(matches!(from_table(&missing, &table, "t"), Err(ChartError::Data(_))));
    }

    #[test]
    fn a_line_adds_up_the_rows_that_share_an_x() {
        // daily_sales-like rows: two merchants on the 23rd, one on the 24th: two points, the
        // 23rd's the sum.
        let mut table = Table::new(["business_date", "merchant_id", "net_sales"]);
        for (day, m, v) in [("2026-11-23", "M1", 10), ("2026-11-23", "M2", 5), ("2026-11-24", "M1", 7)] {
            table.rows.push(vec![Cell::Text(day.into()), Cell::Text(m.into()), Cell::Int(v)]);
        }
        let spec = ChartSpec::Line { x: "business_date".into(), y: "net_sales".into() };
        let doc_text = from_table(&spec, &table, "Net sales").expect("drawn");
        let doc = parse(&doc_text);
        let points: Vec<usize> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .map(|n| n.attribute("points").unwrap_or_default().split_whitespace().count())
            .collect();
        assert!(points.contains(&2), "one point per day: {points:?}");
        assert!(!points.contains(&3), "not one per row: {points:?}");
    }

    #[test]
    fn a_result_in_two_currencies_is_drawn_per_currency() {
        // average_ticket-like rows: the 23rd in CNY and HKD, the 24th in CNY only.
        let mut table = Table::new(["business_date", "currency", "average_ticket"]);
        for (day, currency, v) in [("2026-11-23", "CNY", 92), ("2026-11-23", "HKD", 200), ("2026-11-24", "CNY", 1282)] {
            table.rows.push(vec![Cell::Text(day.into()), Cell::Text(currency.into()), Cell::Int(v)]);
        }
        let spec = ChartSpec::Line { x: "business_date".into(), y: "average_ticket".into() };
        let doc_text = from_table(&spec, &table, "Average ticket").expect("drawn");
        let doc = parse(&doc_text);
        let labels = texts(&doc);
        for want in ["average_ticket CNY", "average_ticket HKD", "2026-11-23", "2026-11-24"] {
            assert!(labels.iter().any(|t| t == want), "{want} in {labels:?}");
        }
        let points: Vec<usize> = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .map(|n| n.attribute("points").unwrap_or_default().split_whitespace().count())
            .collect();
        // CNY over both days; HKD has the 23rd only: a dot, not a fall to zero on the 24th.
        assert!(points.contains(&2), "a line for CNY: {points:?}");
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("circle")).count(), 1, "a dot for HKD");
        let spec = ChartSpec::Bars { x: "business_date".into(), y: "average_ticket".into() };
        let labels = texts(&parse(&from_table(&spec, &table, "t").expect("drawn")));
        assert!(labels.iter().any(|t| t == "2026-11-23 HKD"), "{labels:?}");
        // A heat map adds the cells' counts of every currency.
        let mut cells = Table::new(["local_hour", "weekday", "currency", "payments"]);
        for (currency, n) in [("CNY", 3), ("HKD", 4)] {
            cells.rows.push(vec![Cell::Int(9), Cell::Int(1), Cell::Text(currency.into()), Cell::Int(n)]);
        }
        let spec = ChartSpec::Heatmap { x: "local_hour".into(), y: "weekday".into(), value: "payments".into() };
        let labels = texts(&parse(&from_table(&spec, &cells, "t").expect("drawn")));
        assert!(labels.iter().any(|t| t == "7"), "{labels:?}");
    }
}
