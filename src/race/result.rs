//! The outcome of a race: the finishing order and the unordered top three (삼복연승) that the
//! evaluation predicts. Dead heats are explicit, never settled by row order.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finisher {
    pub position: i64,
    pub chul_no: i64,
}

/// The outcome of a race.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaceResult {
    /// Every horse with a finishing position, by position then start number.
    pub finishers: Vec<Finisher>,
    /// The three horses that finished 1st–3rd, by position. `None` when a dead heat for third
    /// place puts more than three horses in the top three (both sets win the TLA pool then).
    pub top3: Option<[i64; 3]>,
    /// Every horse placed 1st–3rd; more than three exactly when there is a dead heat at the boundary.
    pub placed: Vec<i64>,
    /// Positions shared by more than one horse.
    pub dead_heats: Vec<i64>,
}
