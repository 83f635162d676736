//! A race's result read from its API214_1 rows (the type is `race::RaceResult`): the finishing
//! order and the unordered top three. Dead heats are explicit, never settled by row order.

use crate::kra::envelope::Row;
use crate::kra::normalize;
use crate::race::{Finisher, RaceResult};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResultError {
    /// Fewer than three horses have a finishing position: not run yet, or the card was read.
    #[error("the result is not available: {0} horse(s) have a finishing position")]
    NotAvailable(usize),
}

/// The result from the API214_1 rows of one race after it ran.
pub fn result(rows: &[Row]) -> Result<RaceResult, ResultError> {
    let mut finishers: Vec<Finisher> = rows
        .iter()
        .filter_map(|row| {
            let position = normalize::int(row.get("ord")).filter(|p| *p > 0)?;
            let chul_no = normalize::int(row.get("chulNo"))?;
            Some(Finisher { position, chul_no })
        })
        .collect();
    finishers.sort_by_key(|f| (f.position, f.chul_no));
    finishers.dedup_by_key(|f| f.chul_no);
    let placed: Vec<i64> = finishers.iter().filter(|f| f.position <= 3).map(|f| f.chul_no).collect();
    if placed.len() < 3 {
        return Err(ResultError::NotAvailable(finishers.len()));
    }
    let mut dead_heats: Vec<i64> =
        finishers.windows(2).filter(|w| w[0].position == w[1].position).map(|w| w[0].position).collect();
    dead_heats.dedup();
    let top3 = (placed.len() == 3).then(|| [placed[0], placed[1], placed[2]]);
    Ok(RaceResult { finishers, top3, placed, dead_heats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(placings: &[(i64, i64)]) -> Vec<Row> {
        placings.iter().map(|(chul, ord)| json!({"chulNo": chul, "ord": ord}).as_object().unwrap().clone()).collect()
    }

    #[test]
    fn the_top_three_by_position() {
        let result = result(&rows(&[(5, 2), (10, 1), (3, 11), (7, 3), (1, 4)])).unwrap();
        assert_eq!(result.top3, Some([10, 5, 7]));
        assert!(result.dead_heats.is_empty());
        assert_eq!(result.finishers.len(), 5);
    }

    #[test]
    fn a_dead_heat_inside_the_top_three_keeps_three_horses() {
        let result = result(&rows(&[(4, 1), (2, 2), (9, 2), (6, 4)])).unwrap();
        assert_eq!(result.top3, Some([4, 2, 9]));
        assert_eq!(result.dead_heats, [2]);
    }

    #[test]
    fn a_dead_heat_for_third_is_reported_not_guessed() {
        let result = result(&rows(&[(4, 1), (2, 2), (9, 3), (6, 3), (1, 5)])).unwrap();
        assert_eq!(result.top3, None);
        assert_eq!(result.placed, [4, 2, 6, 9]);
        assert_eq!(result.dead_heats, [3]);
    }

    #[test]
    fn a_card_read_before_the_race_has_no_result() {
        // Before the race every `ord` is 0: the predecessor's cache served exactly this (pitfall 7).
        assert_eq!(result(&rows(&[(1, 0), (2, 0), (3, 0)])), Err(ResultError::NotAvailable(0)));
        assert_eq!(result(&rows(&[(1, 1), (2, 2)])), Err(ResultError::NotAvailable(2)));
    }
}
