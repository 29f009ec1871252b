//! The lists phase: the requesters of the seed read their own requests
//! (`GET /v1/requests?role=requester`, the first page and every fourth time the next one too)
//! and search them (`&q=` three digits of a cost center, which the seed's titles hold), each
//! at a fixed rate, latencies taken from the intended send time. Its results file feeds the
//! table's two rows and the `list_p99_ms` and `search_p99_ms` of the `bench:` line.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use approval_ledger::config::Settings;
use approval_ledger::signing::issue_token;
use serde::{Deserialize, Serialize};

use crate::model::Population;
use crate::run::on_schedule;
use crate::stats::{Recorder, Summary};

/// What to drive.
pub struct ListsPlan {
    /// The service's base URL.
    pub base: String,
    /// Lists per second, and as many searches.
    pub rate: f64,
    /// How long.
    pub duration: Duration,
    /// The seed's people.
    pub population: Population,
    /// Longest wait for an answer.
    pub timeout: Duration,
}

/// What the phase measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListsResults {
    /// Lists per second, and searches per second.
    pub rate: f64,
    /// Seconds.
    pub seconds: f64,
    /// `role=requester` pages.
    pub list: Summary,
    /// `role=requester&q=` searches.
    pub search: Summary,
}

/// One call: a success when it answers 200 with items.
async fn read(client: &reqwest::Client, url: &str, token: &str) -> Result<Option<String>, String> {
    let response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            if e.is_timeout() {
                "timeout".into()
            } else {
                "connection".to_owned()
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("status {}", status.as_u16()));
    }
    let page: serde_json::Value = response.json().await.map_err(|_| "body".to_owned())?;
    if !page["items"].is_array() {
        return Err("no items".into());
    }
    Ok(page["next_cursor"].as_str().map(str::to_owned))
}

/// Runs the phase.
pub async fn run(settings: &Settings, plan: &ListsPlan) -> anyhow::Result<ListsResults> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .timeout(plan.timeout)
        .build()?;
    let mut tokens = Vec::with_capacity(plan.population.requesters);
    for i in 0..plan.population.requesters {
        let user = Population::requester(i);
        tokens.push(issue_token(&settings.auth, &user, &[], 24 * 3600).context("minting a token")?);
    }
    let tokens = Arc::new(tokens);
    let list = Arc::new(Recorder::default());
    let search = Arc::new(Recorder::default());
    let base = plan.base.trim_end_matches('/').to_owned();
    let lists = {
        let (client, tokens, list, base) =
            (client.clone(), tokens.clone(), list.clone(), base.clone());
        on_schedule(plan.rate, plan.duration, move |tick, intended| {
            let (client, tokens, list, base) =
                (client.clone(), tokens.clone(), list.clone(), base.clone());
            async move {
                let mut rng = fastrand::Rng::with_seed(tick);
                let token = &tokens[rng.usize(0..tokens.len())];
                let url = format!("{base}/v1/requests?role=requester&limit=50");
                match read(&client, &url, token).await {
                    Ok(next) => {
                        list.ok(intended.elapsed());
                        if let (Some(cursor), true) = (next, tick % 4 == 0) {
                            let started = tokio::time::Instant::now();
                            match read(&client, &format!("{url}&cursor={cursor}"), token).await {
                                Ok(_) => list.ok(started.elapsed()),
                                Err(what) => list.failed(what),
                            }
                        }
                    }
                    Err(what) => list.failed(what),
                }
            }
        })
    };
    let searches = {
        let (client, tokens, search, base) =
            (client.clone(), tokens.clone(), search.clone(), base.clone());
        on_schedule(plan.rate, plan.duration, move |tick, intended| {
            let (client, tokens, search, base) =
                (client.clone(), tokens.clone(), search.clone(), base.clone());
            async move {
                let mut rng = fastrand::Rng::with_seed(tick ^ 0x5eed);
                let token = &tokens[rng.usize(0..tokens.len())];
                let q = rng.u16(100..1000);
                let url = format!("{base}/v1/requests?role=requester&limit=50&q={q}");
                match read(&client, &url, token).await {
                    Ok(_) => search.ok(intended.elapsed()),
                    Err(what) => search.failed(what),
                }
            }
        })
    };
    tokio::join!(lists, searches);
    Ok(ListsResults {
        rate: plan.rate,
        seconds: plan.duration.as_secs_f64(),
        list: list.summary(),
        search: search.summary(),
    })
}
