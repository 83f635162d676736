//! The run report: one self-contained HTML file (inline SVG, no scripts, no external assets),
//! built from the results alone so that it is as reproducible as `results.json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::metrics::{Interval, Metrics};
use super::results::EvaluationResults;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn pct(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

fn interval(i: Option<Interval>) -> String {
    i.map(|i| format!("{} – {}", pct(i.low), pct(i.high))).unwrap_or_else(|| "–".into())
}

/// A bar chart of rates (0–1) with optional 95% interval whiskers.
fn bar_chart(title: &str, bars: &[(String, f64, Option<Interval>, usize)]) -> String {
    if bars.is_empty() {
        return format!("<h3>{}</h3><p class=\"empty\">No data.</p>", escape(title));
    }
    let (width, height, left, bottom, top) = (640.0, 240.0, 48.0, 40.0, 12.0);
    let plot_h = height - bottom - top;
    let slot = (width - left - 8.0) / bars.len() as f64;
    let bar_w = (slot * 0.6).min(48.0);
    let y = |v: f64| top + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let mut svg = format!(
        "<h3>{}</h3><svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(title)
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            svg,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" class=\"grid\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            width - 8.0,
            left - 6.0,
            y(tick) + 4.0,
            pct(tick),
            y = y(tick)
        );
    }
    for (i, (label, value, ci, n)) in bars.iter().enumerate() {
        let x = left + slot * i as f64 + (slot - bar_w) / 2.0;
        // A 0 % bar is drawn as a visible 2-pixel bar of its own colour, never left out.
        let height = (y(0.0) - y(*value)).max(0.0);
        let (height, class) = if height < 2.0 { (2.0, "bar zero") } else { (height, "bar") };
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{height:.1}\" class=\"{class}\"><title>{}: {} of {n} races</title></rect>",
            y(0.0) - height,
            escape(label),
            pct(*value)
        );
        if let Some(ci) = ci {
            let cx = x + bar_w / 2.0;
            let _ = write!(
                svg,
                "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"whisker\"/>",
                y(ci.low),
                y(ci.high)
            );
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            x + bar_w / 2.0,
            height - bottom + 16.0,
            escape(label)
        );
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">n={n}</text>",
            x + bar_w / 2.0,
            height - bottom + 30.0
        );
    }
    svg.push_str("</svg>");
    svg
}

fn group_bars(groups: Option<&BTreeMap<String, Metrics>>) -> Vec<(String, f64, Option<Interval>, usize)> {
    groups
        .into_iter()
        .flatten()
        .map(|(k, m)| (k.clone(), m.exact_top3_hit_rate, m.exact_top3_hit_rate_ci95, m.covered))
        .collect()
}

/// Stated confidence in tenths against the observed exact-hit rate.
fn calibration(results: &EvaluationResults) -> String {
    let mut bins: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for race in results.races.iter().filter(|r| r.status.covered()) {
        if let Some(c) = race.confidence {
            let bin = ((c * 10.0).floor() as usize).min(9);
            let entry = bins.entry(bin).or_default();
            entry.0 += 1;
            entry.1 += usize::from(race.exact_hit);
        }
    }
    if bins.is_empty() {
        return "<h3>Calibration of the stated confidence</h3><p class=\"empty\">The predictor stated no confidence.</p>".into();
    }
    let bars: Vec<(String, f64, Option<Interval>, usize)> = bins
        .iter()
        .map(|(bin, (n, hits))| {
            (format!("{:.1}–{:.1}", *bin as f64 / 10.0, (*bin + 1) as f64 / 10.0), *hits as f64 / *n as f64, None, *n)
        })
        .collect();
    bar_chart("Calibration: exact-hit rate by stated confidence (a calibrated predictor's bars follow the bin)", &bars)
}

pub fn html(results: &EvaluationResults, commit: &str, prompt_version: Option<&str>) -> String {
    let mut page = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>KRA evaluation report</title><style>\
         body{font-family:system-ui,sans-serif;max-width:760px;margin:2rem auto;color:#222}\
         table{border-collapse:collapse;margin:1rem 0}td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}\
         .bar{fill:#3b6ea8}.whisker{stroke:#111;stroke-width:2}.grid{stroke:#eee}.axis{font-size:11px;fill:#555}\
         .empty{color:#888}.zero{fill:#b33}details{margin:.5rem 0}code{background:#f4f4f4;padding:1px 4px}</style></head><body>",
    );
    let _ = write!(
        page,
        "<h1>Evaluation report</h1><p>Predictor <code>{}</code> on dataset <code>{}</code>, commit <code>{}</code>{}.</p>",
        escape(&results.predictor.to_string()),
        escape(&results.data_snapshot_id),
        escape(commit),
        prompt_version.map(|v| format!(", prompt <code>{}</code>", escape(v))).unwrap_or_default()
    );
    let _ = write!(page, "<p>{}</p>", escape(&describe(&results.predictor)));
    inputs_section(&mut page, results);
    metrics_table(&mut page, results);
    seeds_section(&mut page, results);
    calibration_section(&mut page, results);
    comparison_section(&mut page, results);
    research_section(&mut page, results);
    charts_section(&mut page, results);
    race_table(&mut page, results);
    page.push_str("</body></html>\n");
    page
}

/// The predictor in words, from its identity.
fn describe(predictor: &serde_json::Value) -> String {
    let text = |k: &str| predictor[k].as_str().unwrap_or("?").to_string();
    match (predictor["kind"].as_str(), predictor["name"].as_str()) {
        (Some("baseline"), Some("rating")) => {
            "The rating baseline: the three highest-rated runners (unrated last, then by start number).".into()
        }
        (Some("baseline"), Some("random")) => format!(
            "The random baseline: three runners drawn from seed {} and the race id (a floor every predictor must beat).",
            predictor["seed"]
        ),
        (Some("baseline"), Some("form")) => {
            "The form baseline: the three runners with the best 90-day top-three rate, \
             then win rate, then rating."
                .into()
        }
        (Some("llm"), _) => format!(
            "A language model, {} at {} ({}), given the prompt template and each race as JSON.",
            text("model"),
            text("endpoint"),
            text("api")
        ),
        (Some("recorded"), _) => {
            "Predictions made elsewhere, read from a file of JSON lines and scored on equal terms.".into()
        }
        _ => format!("Predictor {predictor}."),
    }
}

/// Every race: picks, the horses placed, correct count and status, grouped by status (each
/// group opens and closes: the report's filter) and sorted by race id within.
fn race_table(page: &mut String, results: &EvaluationResults) {
    let mut by_status: BTreeMap<String, Vec<&crate::evaluator::scoring::RaceScore>> = BTreeMap::new();
    for race in &results.races {
        let status =
            serde_json::to_value(race.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        by_status.entry(status).or_default().push(race);
    }
    page.push_str("<h2>Races</h2>");
    for (status, mut races) in by_status {
        races.sort_by(|a, b| a.race_id.cmp(&b.race_id));
        let _ = write!(
            page,
            "<details><summary>{} ({} races)</summary><table><tr><th>Race</th><th>Picks</th><th>Placed</th>\
             <th>Correct</th><th>Exact</th></tr>",
            escape(&status),
            races.len()
        );
        for race in races {
            let picks = race.predicted.map(|p| format!("{}, {}, {}", p[0], p[1], p[2])).unwrap_or_else(|| "–".into());
            let placed: Vec<String> = race.actual.iter().map(i64::to_string).collect();
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{picks}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&race.race_id),
                placed.join(", "),
                race.correct_count,
                if race.exact_hit { "yes" } else { "" }
            );
        }
        page.push_str("</table></details>");
    }
}

/// What the dataset's inputs stand on.
fn inputs_section(page: &mut String, results: &EvaluationResults) {
    let m = &results.metrics;
    let _ = m;
    let inputs = &results.inputs;
    let _ = write!(
        page,
        "<p>Inputs: snapshot policy <code>{}</code>, features <code>{}</code>{}.</p>",
        escape(&inputs.snapshot_policy),
        escape(&inputs.features),
        inputs.enrichment_version.as_deref().map(|v| format!(", form <code>{}</code>", escape(v))).unwrap_or_default()
    );
    if inputs.reconstructed_races > 0 {
        let _ = write!(
            page,
            "<p class=\"reconstructed\"><strong>Reconstructed inputs:</strong> {} of {} races stand on pre-race \
             snapshots reconstructed after the race from its stored race card (entry-card fields only, under the \
             entry rules), not on cards collected before the cutoff. Their figures are estimates of what a live \
             collection would have seen.</p>",
            inputs.reconstructed_races, m.races
        );
    }
}

/// The headline figures.
fn metrics_table(page: &mut String, results: &EvaluationResults) {
    let m = &results.metrics;
    let _ = m;
    let _ = write!(
        page,
        "<table><tr><th>Metric</th><th>Value</th><th>95% interval</th></tr>\
         <tr><td>exact_top3_hit_rate (all three right)</td><td>{}</td><td>{}</td></tr>\
         <tr><td>mean_top3_overlap (|predicted ∩ actual| / 3)</td><td>{}</td><td>{}</td></tr>\
         <tr><td>top1_winner_rate</td><td>{}</td><td></td></tr>\
         <tr><td>winner_top3_rate (a winner among the three picks)</td><td>{}</td><td></td></tr>\
         <tr><td>ndcg3 (relevance 3, 2, 1 for 1st, 2nd, 3rd)</td><td>{:.3}</td><td></td></tr>\
         <tr><td>json_valid_rate</td><td>{}</td><td></td></tr>\
         <tr><td>coverage</td><td>{}</td><td></td></tr>\
         <tr><td>races (covered, deferred)</td><td>{} ({}, {})</td><td></td></tr>\
         <tr><td>races excluded from the dataset</td><td>{}</td><td></td></tr></table>",
        pct(m.exact_top3_hit_rate),
        interval(m.exact_top3_hit_rate_ci95),
        pct(m.mean_top3_overlap),
        interval(m.mean_top3_overlap_ci95),
        pct(m.top1_winner_rate),
        pct(m.winner_top3_rate),
        m.ndcg3,
        pct(m.json_valid_rate),
        pct(m.coverage),
        m.races,
        m.covered,
        m.deferred,
        results.excluded.len()
    );
}

/// Every seed's figures, when there were several.
fn seeds_section(page: &mut String, results: &EvaluationResults) {
    let m = &results.metrics;
    let _ = m;
    if let Some(seeds) = &results.seed_runs {
        let _ = write!(
            page,
            "<h2>Seeds</h2><p>The predictor ran once per seed on the same dataset; this report is the run of seed \
             <code>{}</code> (rule: {}).</p><table><tr><th>Metric</th>{}<th>lowest</th><th>median</th><th>highest</th></tr>",
            seeds.judged_seed,
            escape(&seeds.rule),
            seeds.seeds.iter().map(|s| format!("<th>seed {s}</th>")).collect::<String>()
        );
        for name in ["exact_top3_hit_rate", "mean_top3_overlap", "top1_winner_rate", "ndcg3"] {
            let Some(f) = seeds.metrics.get(name) else { continue };
            let cells: String = f.values.iter().map(|v| format!("<td>{:.4}</td>", v)).collect();
            let _ = write!(
                page,
                "<tr><td>{name}</td>{cells}<td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                f.lowest, f.median, f.highest
            );
        }
        page.push_str("</table>");
    }
}

/// The stated confidence as a probability.
fn calibration_section(page: &mut String, results: &EvaluationResults) {
    let m = &results.metrics;
    let _ = m;
    if let Some(c) = &m.calibration {
        let _ = write!(
            page,
            "<h2>Confidence as the probability that the first pick wins</h2><p>Over {} \
             races: Brier score {:.4}, expected calibration error (10 bins) {:.4}, log-loss {:.4}.</p>",
            c.races, c.brier, c.ece, c.log_loss
        );
    }
}

/// Figures that need post-race data (the stored final odds): shown apart, never judged.
fn research_section(page: &mut String, results: &EvaluationResults) {
    if let Some(roi) = &results.research_top1_win_roi {
        let _ = write!(
            page,
            "<h2>Research: return on the top-1 pick</h2><p>A flat 1-unit win bet on the top-1 pick of each covered race              with stored final odds: {} bets, {} won, profit {:+.2} units, ROI {:+.1}%. The odds are post-race data:              a research figure, never a model input and never part of the gate.</p>",
            roi.bets,
            roi.wins,
            roi.total_profit,
            roi.avg_roi * 100.0
        );
    }
}

/// The run and its baseline side by side, and the gate's decision.
fn comparison_section(page: &mut String, results: &EvaluationResults) {
    let m = &results.metrics;
    let _ = m;
    if let (Some(c), Some(b)) = (&results.comparison, &results.baseline_metrics) {
        let decision = super::metrics::promotion(c, &super::run::broken_rails(results), &results.gate);
        let _ = write!(
            page,
            "<h2>The champion gate: {}</h2><p>Promoted when at least {} races are paired, the exact top-3 hit rate \
             is higher and McNemar's p is below {}: {}.</p>\
             <table><tr><th>Metric (the same races)</th><th>This run</th><th>Baseline</th></tr>\
             <tr><td>exact_top3_hit_rate</td><td>{} ({})</td><td>{} ({})</td></tr>\
             <tr><td>mean_top3_overlap</td><td>{} ({})</td><td>{} ({})</td></tr>\
             <tr><td>top1_winner_rate</td><td>{}</td><td>{}</td></tr>\
             <tr><td>ndcg3</td><td>{:.3}</td><td>{:.3}</td></tr>\
             <tr><td>json_valid_rate</td><td>{}</td><td>{}</td></tr>\
             <tr><td>coverage</td><td>{}</td><td>{}</td></tr></table>",
            escape(&decision.reason),
            results.gate.min_paired_races,
            results.gate.significance_level,
            if decision.promoted { "this run beats its baseline" } else { "this run does not replace its baseline" },
            pct(m.exact_top3_hit_rate),
            interval(m.exact_top3_hit_rate_ci95),
            pct(b.exact_top3_hit_rate),
            interval(b.exact_top3_hit_rate_ci95),
            pct(m.mean_top3_overlap),
            interval(m.mean_top3_overlap_ci95),
            pct(b.mean_top3_overlap),
            interval(b.mean_top3_overlap_ci95),
            pct(m.top1_winner_rate),
            pct(b.top1_winner_rate),
            m.ndcg3,
            b.ndcg3,
            pct(m.json_valid_rate),
            pct(b.json_valid_rate),
            pct(m.coverage),
            pct(b.coverage)
        );
        if !decision.guard_rails.is_empty() {
            let rails: Vec<String> = decision.guard_rails.iter().map(|r| format!("<li>{}</li>", escape(r))).collect();
            let _ = write!(
                page,
                "<p>Guard rails broken (margin {}):</p><ul>{}</ul>",
                results.gate.guard_margin,
                rails.concat()
            );
        }
    }
    if let Some(c) = &results.comparison {
        let _ = write!(
            page,
            "<h2>Against the baseline run</h2><p>{} paired races: exact-hit rate difference {:+.1} pp ({}), mean overlap \
             difference {:+.1} pp; the run alone hit {} races, the baseline alone {}; McNemar p = {:.4}. Not paired: \
             {} race(s) only in this run, {} only in the baseline, {} deferred in this run, {} in the baseline.</p>",
            c.paired,
            c.exact_hit_rate_difference * 100.0,
            interval(c.exact_hit_rate_difference_ci95),
            c.mean_overlap_difference * 100.0,
            c.run_better,
            c.baseline_better,
            c.mcnemar_p_value,
            c.only_in_run,
            c.only_in_baseline,
            c.deferred_in_run,
            c.deferred_in_baseline
        );
    }
}

/// Hit rates by month and racecourse, correct counts, confidence and statuses.
fn charts_section(page: &mut String, results: &EvaluationResults) {
    let m = &results.metrics;
    let _ = m;
    page.push_str("<h2>Hit rates</h2>");
    page.push_str(&bar_chart("Exact-hit rate by month", &group_bars(results.breakdowns.get("month"))));
    page.push_str(&bar_chart("Exact-hit rate by racecourse", &group_bars(results.breakdowns.get("meet"))));
    let total = m.covered.max(1) as f64;
    let distribution: Vec<(String, f64, Option<Interval>, usize)> = m
        .correct_count_distribution
        .iter()
        .map(|(k, n)| (format!("{k} correct"), *n as f64 / total, None, *n))
        .collect();
    page.push_str("<h2>Correct horses per race</h2>");
    page.push_str(&bar_chart("Share of races by number of correct horses", &distribution));
    page.push_str("<h2>Confidence</h2>");
    page.push_str(&calibration(results));
    page.push_str("<h2>Score statuses</h2><table><tr><th>Status</th><th>Races</th></tr>");
    for (status, n) in &m.status_counts {
        let _ = write!(page, "<tr><td>{}</td><td>{n}</td></tr>", escape(status));
    }
    page.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluator::dataset::{Dataset, DatasetRace};
    use crate::evaluator::predictors::Predictor;
    use crate::evaluator::results as run;
    use crate::evaluator::scoring::Actual;
    use serde_json::json;

    fn results() -> EvaluationResults {
        let races = (0..40)
            .map(|i| DatasetRace {
                race_id: format!("202505{:02}_1_{}", 1 + i % 28, i),
                date: format!("2025-{:02}-01", 5 + i % 2),
                meet: ["seoul", "busan"][i % 2].into(),
                race_number: i as i64,
                distance: Some(1200),
                input: json!({"runners": (1..=8).map(|c| json!({"chul_no": c, "rating": 50 - c})).collect::<Vec<_>>()})
                    .into(),
                actual: Actual {
                    placed: if i % 3 == 0 { vec![1, 2, 3] } else { vec![1, 5, 6] },
                    winners: vec![1],
                    positions: vec![1, 2, 3],
                },
                field_size: 8,
                snapshot_sha256: String::new(),
                result_sha256: String::new(),
                reconstructed: i < 5,
                enrichment_sha256: None,
            })
            .collect();
        let dataset = Dataset {
            snapshot_id: "ds-test".into(),
            races,
            excluded: vec![],
            snapshot_policy: Default::default(),
            features: Default::default(),
            enrichment_version: None,
            winner_odds: Default::default(),
        };
        run::evaluate(&dataset, &Predictor::Rating, 200, None)
    }

    #[test]
    fn the_report_shows_the_figures_and_charts_and_is_stable() {
        let results = results();
        let page = html(&results, "abc123", Some("v1.7"));
        assert!(page.contains("exact_top3_hit_rate") && page.contains("mean_top3_overlap"));
        assert!(page.contains("winner_top3_rate") && page.contains(&format!("{:.3}", results.metrics.ndcg3)));
        assert!(!page.contains("Confidence as the probability"), "no confidence stated");
        assert!(!page.contains("Research: return"), "no stored odds, no research figure");
        let mut with_odds = results.clone();
        with_odds.research_top1_win_roi =
            Some(crate::evaluator::metrics::Top1WinRoi { bets: 4, wins: 1, total_profit: 0.5, avg_roi: 0.125 });
        let page_odds = html(&with_odds, "abc123", None);
        assert!(page_odds.contains("4 bets, 1 won, profit +0.50 units, ROI +12.5%"), "{page_odds}");
        assert!(page.contains("The rating baseline: the three highest-rated runners"), "the predictor in words");
        assert!(page.contains("<details><summary>SCORED_OK (40 races)</summary>"), "every race, by status");
        assert!(page.contains("<tr><td>20250501_1_0</td><td>1, 2, 3</td><td>1, 2, 3</td><td>3</td><td>yes</td></tr>"));
        // A 0 % bar is still drawn.
        let zero = bar_chart("t", &[("none".into(), 0.0, None, 5)]);
        assert!(zero.contains("class=\"bar zero\"") && zero.contains("height=\"2.0\""), "{zero}");
        let mut stated = results.clone();
        stated.metrics.calibration =
            Some(crate::evaluator::metrics::Calibration { races: 4, brier: 0.300625, ece: 0.4625, log_loss: 0.8016 });
        let page_stated = html(&stated, "abc123", None);
        assert!(
            page_stated.contains("Brier score 0.3006, expected calibration error (10 bins) 0.4625"),
            "{page_stated}"
        );
        assert!(page.contains(&pct(results.metrics.exact_top3_hit_rate)));
        assert_eq!(
            page.matches("<svg").count(),
            3,
            "month, meet, correct counts (no confidences: no calibration chart)"
        );
        assert!(page.contains("Exact-hit rate by month") && page.contains("2025-05") && page.contains("2025-06"));
        assert!(page.contains("The predictor stated no confidence."));
        assert!(page.contains("class=\"whisker\""), "intervals are drawn");
        assert!(!page.contains("<script"), "self-contained, no scripts");
        assert_eq!(page, html(&results, "abc123", Some("v1.7")), "the same results give the same report");
    }

    #[test]
    fn the_report_says_plainly_when_inputs_were_reconstructed() {
        let mut results = results();
        let page = html(&results, "abc123", None);
        assert!(page.contains("<strong>Reconstructed inputs:</strong> 5 of 40 races"), "{page}");
        results.inputs.reconstructed_races = 0;
        assert!(!html(&results, "abc123", None).contains("Reconstructed inputs"));
    }
}
