//! One request budget for a whole run: every HTTP request to the KRA API — first tries, retries,
//! page after page, per-horse detail calls — takes a token first. The per-second rate is a token
//! bucket that holds `burst` tokens (1 by default: no burst), so no one-second window ever sees
//! more than `per_second + burst - 1` requests; the per-run cap is a hard limit, so a run can
//! never spend more than its share.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetLimits {
    /// Sustained requests per second (the bucket refills at this rate).
    pub per_second: f64,
    /// Requests that may go at once after a pause (the bucket's size, at least 1; it starts
    /// full). With 1, requests are spaced `1 / per_second` apart from the first.
    pub burst: u32,
    /// Requests this run may make in all.
    pub per_run: u64,
}

impl BudgetLimits {
    fn bucket(&self) -> f64 {
        f64::from(self.burst.max(1))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the request budget of {limit} calls for this run is spent")]
pub struct BudgetExhausted {
    pub limit: u64,
}

#[derive(Debug)]
struct State {
    tokens: f64,
    refilled: Instant,
    spent: u64,
}

#[derive(Debug)]
pub struct Budget {
    limits: BudgetLimits,
    state: Mutex<State>,
}

impl Budget {
    pub fn new(limits: BudgetLimits) -> Self {
        let tokens = limits.bucket();
        Self { limits, state: Mutex::new(State { tokens, refilled: Instant::now(), spent: 0 }) }
    }

    /// Requests taken so far.
    pub fn spent(&self) -> u64 {
        self.state.lock().map(|s| s.spent).unwrap_or(0)
    }

    pub fn limits(&self) -> BudgetLimits {
        self.limits
    }

    /// Take one request from the budget, waiting for the rate limit if needed.
    pub async fn acquire(&self) -> Result<(), BudgetExhausted> {
        loop {
            let wait = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.spent >= self.limits.per_run {
                    return Err(BudgetExhausted { limit: self.limits.per_run });
                }
                let now = Instant::now();
                let elapsed = now.duration_since(state.refilled).as_secs_f64();
                state.tokens = (state.tokens + elapsed * self.limits.per_second).min(self.limits.bucket());
                state.refilled = now;
                if state.tokens >= 1.0 {
                    state.tokens -= 1.0;
                    state.spent += 1;
                    return Ok(());
                }
                Duration::from_secs_f64((1.0 - state.tokens) / self.limits.per_second)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most requests in any window of one second (half-open) among these times.
    fn most_in_one_second(times: &[Duration]) -> usize {
        times
            .iter()
            .map(|start| times.iter().filter(|t| **t >= *start && **t < *start + Duration::from_secs(1)).count())
            .max()
            .unwrap_or(0)
    }

    async fn times(limits: BudgetLimits, count: usize) -> Vec<Duration> {
        let budget = Budget::new(limits);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..count {
            budget.acquire().await.unwrap();
            times.push(start.elapsed());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_held_and_the_cap_is_hard() {
        let budget = Budget::new(BudgetLimits { per_second: 2.0, burst: 1, per_run: 5 });
        let start = Instant::now();
        for _ in 0..5 {
            budget.acquire().await.unwrap();
        }
        // One at once, then one every half second.
        assert_eq!(start.elapsed(), Duration::from_millis(2000));
        assert_eq!(budget.acquire().await, Err(BudgetExhausted { limit: 5 }));
        assert_eq!(budget.spent(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn no_one_second_window_sees_more_than_the_rate_and_the_first_second_included() {
        let times = times(BudgetLimits { per_second: 5.0, burst: 1, per_run: 100 }, 40).await;
        assert_eq!(most_in_one_second(&times), 5, "{times:?}");
        assert_eq!(most_in_one_second(&times[..10]), 5, "the first second is no exception");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_a_setting_and_adds_at_most_itself_less_one() {
        let times = times(BudgetLimits { per_second: 5.0, burst: 3, per_run: 100 }, 40).await;
        assert_eq!(most_in_one_second(&times), 5 + 3 - 1, "{times:?}");
        assert_eq!(times[..3], [Duration::ZERO; 3], "three at once");
    }
}
