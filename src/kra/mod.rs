//! The KRA public data API (data.go.kr, service B551015): envelope parsing, field normalisation,
//! failure classification, and the HTTP client with its request budget.

pub mod budget;
pub mod client;
pub mod envelope;
pub mod normalize;
