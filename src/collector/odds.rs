//! Odds rows read from API160_1 and the API301 backfill (the row type is `race::OddsRow`):
//! post-race data, stored for analysis, never a model input.

use crate::kra::envelope::Row;
use crate::kra::normalize;
use crate::race::{OddsRow, Pool};

/// Odds rows of one race; rows of unknown pools or without odds are counted, not kept.
pub fn odds(rows: &[Row], race_number: i64) -> (Vec<OddsRow>, usize) {
    let mut dropped = 0;
    let mut out = Vec::new();
    for row in rows {
        if normalize::int(row.get("rcNo")).is_some_and(|n| n != race_number) {
            continue;
        }
        let pool = normalize::text(row.get("pool")).as_deref().and_then(Pool::parse);
        let (Some(pool), Some(chul_no), Some(odds)) =
            (pool, normalize::int(row.get("chulNo")), normalize::float(row.get("odds")))
        else {
            dropped += 1;
            continue;
        };
        out.push(OddsRow {
            race_number,
            pool,
            chul_no,
            chul_no2: normalize::int(row.get("chulNo2")).unwrap_or(0),
            chul_no3: normalize::int(row.get("chulNo3")).unwrap_or(0),
            odds,
        });
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pools_in_korean_or_english_and_only_this_race() {
        let rows: Vec<Row> = [
            json!({"pool": "삼복승식", "chulNo": 1, "chulNo2": 4, "chulNo3": 7, "odds": 12.5, "rcNo": 2}),
            json!({"pool": "WIN", "chulNo": 4, "odds": 3.1, "rcNo": 2}),
            json!({"pool": "WIN", "chulNo": 4, "odds": 5.0, "rcNo": 3}),
            json!({"pool": "기타", "chulNo": 4, "odds": 5.0, "rcNo": 2}),
            json!({"pool": "PLC", "chulNo": 4, "odds": "-", "rcNo": 2}),
        ]
        .iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let (odds, dropped) = odds(&rows, 2);
        assert_eq!(odds.len(), 2);
        assert_eq!((odds[0].pool, odds[0].chul_no2, odds[0].chul_no3), (Pool::Trio, 4, 7));
        assert_eq!(odds[1].chul_no2, 0);
        assert_eq!(dropped, 2);
    }
}
