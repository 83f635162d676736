//! One request budget for a whole run: every HTTP request to the KRA API — first tries, retries,
//! page after page, per-horse detail calls — takes a token first. The per-second rate is a token
//! bucket; the per-day cap is a hard limit, so a run can never spend more than its share.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetLimits {
    /// Sustained requests per second (the bucket refills at this rate; bursts up to one second's worth).
    pub per_second: f64,
    /// Requests this run may make in all.
    pub per_run: u64,
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
        let burst = limits.per_second.max(1.0);
        Self { limits, state: Mutex::new(State { tokens: burst, refilled: Instant::now(), spent: 0 }) }
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
                let burst = self.limits.per_second.max(1.0);
                let elapsed = now.duration_since(state.refilled).as_secs_f64();
                state.tokens = (state.tokens + elapsed * self.limits.per_second).min(burst);
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

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_held_and_the_cap_is_hard() {
        let budget = Budget::new(BudgetLimits { per_second: 2.0, per_run: 5 });
        let start = Instant::now();
        for _ in 0..5 {
            budget.acquire().await.unwrap();
        }
        // Two at once (the burst), then one every half second.
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        assert_eq!(budget.acquire().await, Err(BudgetExhausted { limit: 5 }));
        assert_eq!(budget.spent(), 5);
    }
}
