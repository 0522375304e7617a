//! Averaging rounds, ratios to the peer, the table and the JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::load::scenario::Figure;
use crate::load::target::Target;

/// One run of a scenario against one target.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The target.
    pub target: Target,
    /// Which round (A B A B: round 0 is the first A and B).
    pub round: usize,
    /// What was measured.
    pub figures: Vec<Figure>,
}

/// Everything a scenario produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario and its parameters, as typed.
    pub scenario: String,
    /// Every run in order.
    pub runs: Vec<Run>,
    /// Per target, the mean of each figure over its rounds.
    pub means: BTreeMap<String, BTreeMap<String, f64>>,
    /// apm's mean over the peer's, per figure (when there is a peer).
    pub ratios: BTreeMap<String, f64>,
}

impl Report {
    /// Builds means and ratios from the runs.
    pub fn new(scenario: String, runs: Vec<Run>, peer: Option<Target>) -> Report {
        let mut sums: BTreeMap<String, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
        for run in &runs {
            for f in &run.figures {
                let e = sums
                    .entry(run.target.name().to_owned())
                    .or_default()
                    .entry(f.name.clone())
                    .or_default();
                e.0 += f.value;
                e.1 += 1;
            }
        }
        let means: BTreeMap<String, BTreeMap<String, f64>> = sums
            .into_iter()
            .map(|(t, figs)| {
                (
                    t,
                    figs.into_iter()
                        .map(|(n, (s, c))| (n, s / c as f64))
                        .collect(),
                )
            })
            .collect();
        let mut ratios = BTreeMap::new();
        // With `--tls` the apm runs are apm-tls's.
        let apm = means.get("apm").or_else(|| means.get("apm-tls"));
        if let (Some(peer), Some(apm)) = (peer, apm)
            && let Some(other) = means.get(peer.name())
        {
            for (name, a) in apm {
                if let Some(b) = other.get(name)
                    && *b != 0.0
                {
                    ratios.insert(name.clone(), a / b);
                }
            }
        }
        Report {
            scenario,
            runs,
            means,
            ratios,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let targets: Vec<&String> = self.means.keys().collect();
        // Figure order and units from the first run.
        let mut order: Vec<(String, &'static str, bool)> = Vec::new();
        for run in &self.runs {
            for f in &run.figures {
                if !order.iter().any(|(n, _, _)| *n == f.name) {
                    order.push((f.name.clone(), f.unit, f.higher_is_better));
                }
            }
        }
        let mut out = format!("{}\n", self.scenario);
        out += &format!("{:<20}", "figure");
        for t in &targets {
            out += &format!("{:>16}", t);
        }
        if !self.ratios.is_empty() {
            out += &format!("{:>14}", "apm / peer");
        }
        out += "\n";
        for (name, unit, higher) in &order {
            out += &format!("{:<20}", format!("{name} ({unit})").replace(" ()", ""));
            for t in &targets {
                match self.means[*t].get(name) {
                    Some(v) => out += &format!("{:>16}", human(*v)),
                    None => out += &format!("{:>16}", "-"),
                }
            }
            if let Some(r) = self.ratios.get(name) {
                let better = if *higher { *r >= 1.0 } else { *r <= 1.0 };
                out += &format!("{:>10.2}x {}", r, if better { "+" } else { "-" });
            }
            out += "\n";
        }
        out
    }
}

fn human(v: f64) -> String {
    if v.abs() >= 100.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else {
        format!("{:.2}", v)
    }
}
