//! Charts as SVG documents, drawn with plotters: [`line`] (trends), [`bars`] (channel mix,
//! segments, basket sizes), [`heatmap`] (hour × weekday, cohort triangle), and
//! [`from_table`] to draw a named query's result as its header says.
//!
//! Every chart has a human title and axis titles that name the unit (the currency of money
//! columns, % for percentages); axis labels are printed only where they fit (every k-th when
//! they crowd), weekdays as names, and a heat map's shading has a legend, its scale topped at
//! the 95th percentile so that one large cell (a cohort's first week) does not wash out the rest.
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
/// Outer margin, and the room for each axis's labels and title.
const MARGIN: u32 = 16;
const X_LABELS: u32 = 56;
const Y_LABELS: u32 = 96;
/// Room on the right of a heat map for its colour legend.
const LEGEND: u32 = 110;
/// Pixels a character of an axis label takes, roughly (12 px sans-serif).
const CHAR_PX: f64 = 7.0;
/// Above this many values a heat map's shading tops out at the 95th percentile.
const SCALE_BY_PERCENTILE_OVER: usize = 20;

/// What a chart's axes are called: the column and its unit, e.g. `Net sales (CNY)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Axes {
    /// The horizontal axis's title.
    pub x: String,
    /// The vertical axis's title.
    pub y: String,
    /// What a heat map's shading means (its legend's title); empty for other charts.
    pub value: String,
}

impl Axes {
    /// Axes titled `x` and `y`.
    pub fn new(x: impl Into<String>, y: impl Into<String>) -> Axes {
        Axes { x: x.into(), y: y.into(), value: String::new() }
    }
}

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

/// Every chart's frame: the title, margins, and room for the axes' labels and titles.
fn frame<'a, 'b>(root: &'a DrawingArea<SVGBackend<'b>, Shift>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 22)).margin(MARGIN).x_label_area_size(X_LABELS).y_label_area_size(Y_LABELS);
    builder
}

/// The plot's width in pixels, within a drawing `width` wide.
fn plot_width(width: u32) -> f64 {
    f64::from(width.saturating_sub(2 * MARGIN + Y_LABELS))
}

/// The plot's height in pixels.
fn plot_height() -> f64 {
    f64::from(SIZE.1.saturating_sub(2 * MARGIN + X_LABELS + 30))
}

/// Every how many of `n` categories a label is printed, so that labels as long as the longest
/// of `names` do not run into each other over `width` pixels.
fn label_every(names: &[String], n: usize, width: f64) -> usize {
    let longest = names.iter().take(n).map(|s| s.chars().count()).max().unwrap_or(0) as f64;
    let slot = width / n.max(1) as f64;
    ((longest * CHAR_PX + 8.0) / slot).ceil().max(1.0) as usize
}

/// A value axis's labels: how many decimals they carry and at most how many there are. Whole
/// values over a short span are labelled on whole numbers only; a span of 20 or more needs no
/// decimals; anything else carries two.
fn value_axis(values: &[Decimal], range: &std::ops::Range<f64>) -> (usize, usize) {
    let span = range.end - range.start;
    match (values.iter().all(|v| v.fract().is_zero()), span) {
        (_, s) if s >= 20.0 => (0, 10),
        (true, s) => (0, (s.floor() as usize + 1).max(2)),
        (false, _) => (2, 10),
    }
}

/// A value axis's label: digits grouped, with `decimals` decimals.
fn value_label(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (sign, digits) = text.strip_prefix('-').map_or(("", text.as_str()), |d| ("-", d));
    let (int, frac) = digits.split_once('.').map_or((digits, None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Names the centre of every `every`-th category segment of an axis.
fn category(names: &[String], every: usize) -> impl Fn(&SegmentValue<i32>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) if *i >= 0 && (*i as usize).is_multiple_of(every.max(1)) => {
            names.get(*i as usize).cloned().unwrap_or_default()
        }
        _ => String::new(),
    }
}

/// `n` categories as a segmented axis of exactly `n` segments (a lone category in the middle
/// of three, the others empty: an axis of one segment has no width).
fn segments(n: usize) -> plotters::coord::ranged1d::SegmentedCoord<plotters::coord::types::RangedCoordi32> {
    if n <= 1 { (-1..1).into_segmented() } else { (0..n as i32 - 1).into_segmented() }
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
    axes: &Axes,
    x: &[String],
    series: &[(String, Vec<Option<Decimal>>)],
    marks: &[(usize, usize)],
) -> Result<String, ChartError> {
    let series = &series[..series.len().min(CHART_SERIES_MAX)];
    let last = x.len().saturating_sub(1).max(1) as f64;
    let range = span(series.iter().flat_map(|(_, v)| v.iter().flatten().map(|d| pixels(*d))));
    let values: Vec<Decimal> = series.iter().flat_map(|(_, v)| v.iter().flatten().copied()).collect();
    let (decimals, y_labels) = value_axis(&values, &range);
    svg(|root| {
        let mut chart = frame(root, title).build_cartesian_2d(-0.2f64..last + 0.2, range).map_err(draw_err)?;
        // As many labels as fit, on whole categories.
        let every = label_every(x, x.len(), plot_width(SIZE.0));
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
            .x_labels(x.len().div_ceil(every).clamp(2, x.len().max(2)))
            .x_label_formatter(&label)
            .y_labels(y_labels)
            .y_label_formatter(&|v| value_label(*v, decimals))
            .x_desc(axes.x.as_str())
            .y_desc(axes.y.as_str())
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
pub fn bars(title: &str, axes: &Axes, labels: &[String], values: &[Decimal]) -> Result<String, ChartError> {
    let n = labels.len().min(values.len()).min(CHART_CATEGORIES_MAX);
    let range = span(values[..n].iter().map(|d| pixels(*d)));
    let (decimals, y_labels) = value_axis(&values[..n], &range);
    svg(|root| {
        let mut chart = frame(root, title).build_cartesian_2d(segments(n), range).map_err(draw_err)?;
        let label = category(labels, label_every(labels, n, plot_width(SIZE.0)));
        chart
            .configure_mesh()
            .x_labels(n + 2)
            .x_label_formatter(&label)
            .y_labels(y_labels)
            .y_label_formatter(&|v| value_label(*v, decimals))
            .x_desc(axes.x.as_str())
            .y_desc(axes.y.as_str())
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
                let gap = ((plot_width(SIZE.0) / n.max(1) as f64) * 0.15).clamp(1.0, 6.0) as u32;
                bar.set_margin(0, 0, gap, gap);
                bar
            }))
            .map_err(draw_err)?;
        Ok(())
    })
}

/// The value a heat map's shading tops out at: the largest, or with many values the 95th
/// percentile (larger values are drawn at full colour).
fn shading_top(cells: &[Vec<Option<Decimal>>]) -> f64 {
    let mut values: Vec<f64> = cells.iter().flatten().flatten().map(|d| pixels(*d)).collect();
    values.sort_by(f64::total_cmp);
    let top = if values.len() > SCALE_BY_PERCENTILE_OVER {
        values[((values.len() - 1) as f64 * 0.95).round() as usize]
    } else {
        values.last().copied().unwrap_or(0.0)
    };
    top.max(0.0)
}

/// The colour of a cell `share` (0 to 1) of the way from white to full blue.
fn shade(share: f64) -> RGBColor {
    let fade = |full: f64| (255.0 - (255.0 - full) * share.clamp(0.0, 1.0)) as u8;
    RGBColor(fade(33.0), fade(102.0), fade(172.0))
}

/// A grid of cells (`cells[y][x]`, `None` for no value; the first row drawn at the top)
/// shaded from white (zero) to blue, each cell labelled with its value where the value fits,
/// with a legend of the shading on the right.
pub fn heatmap(
    title: &str,
    axes: &Axes,
    x: &[String],
    y: &[String],
    cells: &[Vec<Option<Decimal>>],
) -> Result<String, ChartError> {
    let (nx, ny) = (x.len().min(CHART_CATEGORIES_MAX), y.len().min(CHART_CATEGORIES_MAX));
    let top = shading_top(cells);
    let most = cells.iter().flatten().flatten().map(|d| pixels(*d)).fold(0.0f64, f64::max);
    let width = SIZE.0 - LEGEND;
    let (cell_w, cell_h) = (plot_width(width) / nx.max(1) as f64, plot_height() / ny.max(1) as f64);
    svg(|root| {
        let (area, legend) = root.split_horizontally(width);
        let mut chart = frame(&area, title).build_cartesian_2d(segments(nx), segments(ny)).map_err(draw_err)?;
        // Rows top to bottom: row r is drawn at segment ny - 1 - r.
        let flipped: Vec<String> = y.iter().take(ny).rev().cloned().collect();
        let x_label = category(x, label_every(x, nx, plot_width(width)));
        let y_every = ((14.0 / cell_h).ceil() as usize).max(1);
        let y_label = move |v: &SegmentValue<i32>| match v {
            // Every k-th row from the top.
            SegmentValue::CenterOf(i)
                if *i >= 0 && (*i as usize) < ny && (ny - 1 - *i as usize).is_multiple_of(y_every) =>
            {
                flipped.get(*i as usize).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .x_labels(nx + 2)
            .y_labels(ny + 2)
            .x_label_formatter(&x_label)
            .y_label_formatter(&y_label)
            .x_desc(axes.x.as_str())
            .y_desc(axes.y.as_str())
            .disable_mesh()
            .draw()
            .map_err(draw_err)?;
        let mut shaded = Vec::new();
        let mut labels = Vec::new();
        for (yi, row) in cells.iter().enumerate().take(ny) {
            for (xi, value) in row.iter().enumerate().take(nx) {
                let Some(value) = value else { continue };
                let share = if top > 0.0 { pixels(*value) / top } else { 0.0 };
                let (cx, cy) = (xi as i32, (ny - 1 - yi) as i32);
                shaded.push(Rectangle::new(
                    [
                        (SegmentValue::Exact(cx), SegmentValue::Exact(cy)),
                        (SegmentValue::Exact(cx + 1), SegmentValue::Exact(cy + 1)),
                    ],
                    shade(share).filled(),
                ));
                // A value is printed only where it fits inside its cell.
                let text = value.normalize().to_string();
                if text.chars().count() as f64 * 6.2 + 4.0 > cell_w || cell_h < 13.0 {
                    continue;
                }
                let ink = if share > 0.6 { WHITE } else { BLACK };
                labels.push(Text::new(
                    text,
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
        let values: Vec<Decimal> = cells.iter().flatten().flatten().copied().collect();
        draw_legend(&legend, &axes.value, top, most, value_axis(&values, &(0.0..top)).0)
    })
}

/// A heat map's legend: its title, a bar shading from white (0) to full colour (`top`, or
/// `≥ top` when larger values were drawn at full colour), and the values at its ends.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    title: &str,
    top: f64,
    most: f64,
    decimals: usize,
) -> Result<(), ChartError> {
    const STEPS: i32 = 20;
    let (x0, y0, bar_h) = (12, 70, 300);
    let font = ("sans-serif", 12).into_font();
    area.draw(&Text::new(title.to_owned(), (x0, y0 - 24), font.clone())).map_err(draw_err)?;
    for step in 0..STEPS {
        let share = f64::from(STEPS - step) / f64::from(STEPS);
        let (top_y, bottom_y) = (y0 + bar_h * step / STEPS, y0 + bar_h * (step + 1) / STEPS);
        area.draw(&Rectangle::new([(x0, top_y), (x0 + 22, bottom_y)], shade(share).filled())).map_err(draw_err)?;
    }
    area.draw(&Rectangle::new([(x0, y0), (x0 + 22, y0 + bar_h)], BLACK.stroke_width(1))).map_err(draw_err)?;
    let high = if most > top { format!("≥ {}", value_label(top, decimals)) } else { value_label(top, decimals) };
    area.draw(&Text::new(high, (x0 + 28, y0 - 6), font.clone())).map_err(draw_err)?;
    area.draw(&Text::new("0".to_owned(), (x0 + 28, y0 + bar_h - 6), font)).map_err(draw_err)?;
    Ok(())
}

/// A column's name as people write it: `net_sales` → `Net sales`, a few named outright.
pub fn human(column: &str) -> String {
    let named = match column {
        "business_date" => "Business date",
        "merchant_id" => "Merchant",
        "local_hour" => "Hour of the day (local time)",
        "weekday" => "Weekday",
        "cohort_week" => "Week of the first purchase",
        "week" => "Weeks since the first purchase",
        "cohort_month" => "Month of the first purchase",
        "month" => "Months since the first purchase",
        "band" => "Ticket size",
        other => {
            let words = other.strip_suffix("_pct").unwrap_or(other).replace('_', " ");
            let mut chars = words.chars();
            return chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default();
        }
    };
    named.to_owned()
}

/// A value column's axis title with its unit: `%` for a percentage, the currency for an
/// amount of money (a decimal column of a result in one currency), nothing for a count.
fn axis_title(table: &Table, column: &str, currencies: &[String]) -> String {
    if column.ends_with("_pct") {
        return format!("{} (%)", human(column));
    }
    let index = table.column(column);
    let money = index.is_some_and(|i| table.rows.iter().any(|r| matches!(r[i], Cell::Decimal(_))));
    match currencies {
        [one] if money => format!("{} ({one})", human(column)),
        [_, _, ..] if money => format!("{} (each currency apart)", human(column)),
        _ => human(column),
    }
}

/// Weekday numbers (1 = Monday) as names.
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A heat-map axis's categories: the values found, sorted; a weekday or hour-of-day axis has
/// every weekday (named) or every hour, whether or not each has a value.
fn heat_axis(column: &str, found: Vec<Cell>) -> (Vec<Cell>, Vec<String>) {
    let whole = |range: std::ops::RangeInclusive<i128>| range.map(Cell::Int).collect::<Vec<_>>();
    let cells = match column {
        "weekday" if found.iter().all(|c| matches!(c, Cell::Int(1..=7))) => whole(1..=7),
        "local_hour" if found.iter().all(|c| matches!(c, Cell::Int(0..=23))) => whole(0..=23),
        _ => found,
    };
    let names = cells
        .iter()
        .map(|c| match (column, c) {
            ("weekday", Cell::Int(d @ 1..=7)) => WEEKDAYS[*d as usize - 1].to_owned(),
            ("local_hour", Cell::Int(h)) => format!("{h:02}"),
            _ => c.to_string(),
        })
        .collect();
    (cells, names)
}

/// A named query's result drawn as its header's `chart` says, under `title`.
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
                if apart { currencies.iter().map(|c| format!("{} {c}", human(y))).collect() } else { vec![human(y)] };
            let mut series: Vec<(String, Vec<Option<Decimal>>)> =
                names.into_iter().map(|n| (n, vec![None; labels.len()])).collect();
            for (r, (at, s)) in table.rows.iter().zip(placed) {
                if let Some(v) = number(&r[yi], y)? {
                    *series[s].1[at].get_or_insert(Decimal::ZERO) += v;
                }
            }
            let axes = Axes::new(human(x), axis_title(table, y, &currencies));
            line(title, &axes, &labels, &series, &[])
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
            let axes = Axes::new(human(x), axis_title(table, y, &currencies));
            bars(title, &axes, &labels, &values)
        }
        ChartSpec::Heatmap { x, y, value } => {
            let (xi, yi, vi) = (index(x)?, index(y)?, index(value)?);
            let sorted = |i: usize| {
                let mut all: Vec<Cell> = table.rows.iter().map(|r| r[i].clone()).collect();
                all.sort();
                all.dedup();
                all
            };
            let ((xs, x_names), (ys, y_names)) = (heat_axis(x, sorted(xi)), heat_axis(y, sorted(yi)));
            let mut cells: Vec<Vec<Option<Decimal>>> = vec![vec![None; xs.len()]; ys.len()];
            for r in &table.rows {
                let (Ok(cx), Ok(cy)) = (xs.binary_search(&r[xi]), ys.binary_search(&r[yi])) else { continue };
                if let Some(v) = number(&r[vi], value)? {
                    *cells[cy][cx].get_or_insert(Decimal::ZERO) += v;
                }
            }
            let axes = Axes { x: human(x), y: human(y), value: axis_title(table, value, &currencies) };
            heatmap(title, &axes, &x_names, &y_names, &cells)
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

    /// The shaded cells of a heat map: filled rectangles left of the legend.
    fn cells(doc: &roxmltree::Document<'_>) -> usize {
        let legend = f64::from(SIZE.0 - LEGEND);
        doc.descendants()
            .filter(|n| n.has_tag_name("rect"))
            .filter(|n| n.attribute("fill").is_some_and(|f| !f.eq_ignore_ascii_case("#FFFFFF") && f != "none"))
            .filter(|n| n.attribute("x").and_then(|x| x.parse::<f64>().ok()).is_some_and(|x| x < legend))
            .count()
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
        let text = line("Net sales per week", &Axes::new("Week", "Net sales (CNY)"), &x, &series, &[(0, 2)]);
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
        for want in ["Net sales per week", "M1", "M2", "W1", "W4", "Week", "Net sales (CNY)"] {
            assert!(labels.iter().any(|t| t == want), "{want} in {labels:?}");
        }
        assert_eq!(doc.descendants().filter(|n| n.has_tag_name("circle")).count(), 1);
    }

    #[test]
    fn a_bar_chart_holds_one_bar_per_category() {
        // Bars are the filled rectangles other than the white background.
        let labels: Vec<String> = ["wechat", "alipay", "cash"].map(String::from).to_vec();
        let axes = Axes::new("Channel", "Gross sales (CNY)");
        let text = bars("Channel mix", &axes, &labels, &[d(480), d(90), d(20)]).expect("drawn");
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
        assert_eq!(cells(&doc), 3);
        let labels = texts(&doc);
        // Two cells of 3, and the legend's top.
        assert_eq!(labels.iter().filter(|t| *t == "3").count(), 3, "{labels:?}");
        // Every weekday by name and every hour, whether or not it has a value; the axes titled,
        // the legend's shading up to the largest value.
        for want in ["Mon", "Sun", "00", "23", "Weekday", "Hour of the day (local time)", "Payments"] {
            assert!(labels.iter().any(|t| t == want), "{want} in {labels:?}");
        }
        assert!(!labels.iter().any(|t| t == "2" || t == "5"), "weekdays are names: {labels:?}");
        let missing = ChartSpec::Bars { x: "channel".into(), y: "payments".into() };
        assert!(matches!(from_table(&missing, &table, "t"), Err(ChartError::Data(_))));
    }

    #[test]
    fn crowded_labels_are_thinned_and_small_cells_go_unlabelled() {
        // 40 merchants' bars: every k-th label, not 40 run together.
        let labels: Vec<String> = (0..40).map(|m| format!("M{m:06}")).collect();
        let values: Vec<Decimal> = (0..40).map(|m| d(100 - m)).collect();
        let labels_drawn =
            texts(&parse(&bars("t", &Axes::new("Merchant", "Net sales (CNY)"), &labels, &values).expect("drawn")))
                .into_iter()
                .filter(|t| t.starts_with('M') && t.len() == 7)
                .count();
        assert!((5..40).contains(&labels_drawn), "{labels_drawn} labels");
        // A 78 × 78 triangle: cells too small for their values, shaded against the 95th
        // percentile (the first week's 100 % tops out above it), the legend saying so.
        let x: Vec<String> = (0..78).map(|w| w.to_string()).collect();
        let triangle: Vec<Vec<Option<Decimal>>> = (0..78)
            .map(|c| {
                (0..78).map(|w| (w < 78 - c).then(|| if w == 0 { d(100) } else { Decimal::new(500 + w, 2) })).collect()
            })
            .collect();
        let axes = Axes { x: "Weeks".into(), y: "Cohort".into(), value: "Retention (%)".into() };
        let doc_text = heatmap("t", &axes, &x, &x, &triangle).expect("drawn");
        let doc = parse(&doc_text);
        let labels = texts(&doc);
        assert!(!labels.iter().any(|t| t == "100" || t.starts_with("5.")), "no cell values: {labels:?}");
        assert!(labels.iter().any(|t| t.starts_with("≥ ")), "{labels:?}");
        assert!(labels.iter().any(|t| t == "Retention (%)"));
        assert_eq!(cells(&doc), 78 * 79 / 2);
    }

    #[test]
    fn a_lone_category_is_drawn_with_its_label() {
        // One bar, one heat-map cell: each has a width and its label; whole values are
        // labelled on whole numbers.
        let axes = Axes { x: "Channel".into(), y: "Payments".into(), value: "Payments".into() };
        let doc_text = bars("t", &axes, &["cash".to_owned()], &[d(5)]).expect("drawn");
        let doc = parse(&doc_text);
        let widths: Vec<f64> = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") != Some("#FFFFFF"))
            .filter_map(|n| n.attribute("width")?.parse().ok())
            .collect();
        assert!(widths.len() == 1 && widths[0] > 50.0, "{widths:?}");
        let labels = texts(&doc);
        assert!(labels.iter().any(|t| t == "cash"), "{labels:?}");
        assert!(!labels.iter().any(|t| t.contains('.')), "whole numbers: {labels:?}");
        let doc_text =
            heatmap("t", &axes, &["0".to_owned()], &["2026-11-02".to_owned()], &[vec![Some(d(100))]]).expect("drawn");
        let doc = parse(&doc_text);
        assert_eq!(cells(&doc), 1);
        assert!(texts(&doc).iter().any(|t| t == "2026-11-02"));
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
            table.rows.push(vec![Cell::Text(day.into()), Cell::Text(currency.into()), Cell::Decimal(d(v))]);
        }
        let spec = ChartSpec::Line { x: "business_date".into(), y: "average_ticket".into() };
        let doc_text = from_table(&spec, &table, "Average ticket").expect("drawn");
        let doc = parse(&doc_text);
        let labels = texts(&doc);
        for want in [
            "Average ticket CNY",
            "Average ticket HKD",
            "2026-11-23",
            "2026-11-24",
            "Average ticket (each currency apart)",
        ] {
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
