//! The collection pipeline of `kra-collector`: pure steps (race plan, pre-race card, results,
//! odds) around the I/O of the KRA client and the store.

pub mod cli;
pub mod entry_rules;
pub mod history;
pub mod odds;
pub mod prerace;
pub mod race_plan;
pub mod results;
pub mod run;
