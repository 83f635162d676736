//! The evaluator's failures, each with the exit code the operator classifies it by.

pub use crate::worker::exit::evaluator as exit;

/// Why an evaluation stopped; the message names what failed and, where there is one, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvaluatorError {
    /// A bad argument, an unreadable input file, an unwritable artifact directory.
    Usage(String),
    Database(String),
    /// The selection left no race to evaluate.
    NoDataset(String),
    /// A model input carried post-race information.
    Leakage(String),
    /// The LLM endpoint answered none of the calls.
    Unreachable(String),
    Tracking(String),
}

impl EvaluatorError {
    /// The process exit code (the one place the evaluator's failures become exit codes).
    pub fn exit_code(&self) -> u8 {
        match self {
            EvaluatorError::Usage(_) => exit::USAGE,
            EvaluatorError::Database(_) => exit::DATABASE,
            EvaluatorError::NoDataset(_) => exit::NO_DATASET,
            EvaluatorError::Leakage(_) => exit::LEAKAGE,
            EvaluatorError::Unreachable(_) => exit::UNREACHABLE,
            EvaluatorError::Tracking(_) => exit::TRACKING,
        }
    }
}

impl std::fmt::Display for EvaluatorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (EvaluatorError::Usage(message)
        | EvaluatorError::Database(message)
        | EvaluatorError::NoDataset(message)
        | EvaluatorError::Leakage(message)
        | EvaluatorError::Unreachable(message)
        | EvaluatorError::Tracking(message)) = self;
        f.write_str(message)
    }
}

impl std::error::Error for EvaluatorError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_its_own_exit_code_and_keeps_its_message() {
        let all = [
            EvaluatorError::Usage("u".into()),
            EvaluatorError::Database("d".into()),
            EvaluatorError::NoDataset("n".into()),
            EvaluatorError::Leakage("l".into()),
            EvaluatorError::Unreachable("r".into()),
            EvaluatorError::Tracking("t".into()),
        ];
        let codes: std::collections::BTreeSet<u8> = all.iter().map(EvaluatorError::exit_code).collect();
        assert_eq!(codes.len(), all.len(), "two failures share an exit code");
        assert!(!codes.contains(&0) && !codes.contains(&1));
        assert_eq!(all[3].to_string(), "l");
    }
}
