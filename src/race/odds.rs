//! Odds rows (API160_1 and the API301 backfill): post-race data, stored for analysis, never a
//! model input.

use serde::{Deserialize, Serialize};

/// Betting pools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Pool {
    Win,
    Place,
    Quinella,
    Exacta,
    QuinellaPlace,
    /// 삼복승식: the unordered top three, the target the evaluation predicts.
    Trio,
    /// 삼쌍승식: the ordered top three.
    Trifecta,
    /// 쌍복승식.
    Xla,
}

impl Pool {
    /// From the Korean name or the English code the API uses.
    pub fn parse(value: &str) -> Option<Pool> {
        Some(match value.trim() {
            "단승식" | "WIN" => Pool::Win,
            "연승식" | "PLC" => Pool::Place,
            "복승식" | "QNL" => Pool::Quinella,
            "쌍승식" | "EXA" => Pool::Exacta,
            "복연승식" | "QPL" => Pool::QuinellaPlace,
            "삼복승식" | "TLA" => Pool::Trio,
            "삼쌍승식" | "TRI" => Pool::Trifecta,
            "쌍복승식" | "XLA" => Pool::Xla,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Pool::Win => "WIN",
            Pool::Place => "PLC",
            Pool::Quinella => "QNL",
            Pool::Exacta => "EXA",
            Pool::QuinellaPlace => "QPL",
            Pool::Trio => "TLA",
            Pool::Trifecta => "TRI",
            Pool::Xla => "XLA",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OddsRow {
    pub race_number: i64,
    pub pool: Pool,
    pub chul_no: i64,
    pub chul_no2: i64,
    pub chul_no3: i64,
    pub odds: f64,
}
