//! What the load saw, and the final check of a scenario.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::*;

/// What the load saw, to check at the end.
#[derive(Debug)]
pub struct Report {
    pub chats: Vec<String>,
    pub acked: HashMap<String, Vec<Acked>>,
    /// Every POST of a message.
    pub attempts: Vec<Attempt>,
    /// The reactions tried, per message id.
    pub reactions: HashMap<String, Reacted>,
    pub received: HashMap<String, Vec<Received>>,
    pub outcomes: Arc<Outcomes>,
    pub drained_at: Instant,
}

/// An id's position in its chat: the offset (hexadecimal) after the
/// partition.
pub(crate) fn offset_of(id: &str) -> u64 {
    id.rsplit('-')
        .next()
        .and_then(|o| u64::from_str_radix(o, 16).ok())
        .unwrap_or_else(|| panic!("message id {id:?} has no offset"))
}

impl Report {
    pub fn acked_total(&self) -> usize {
        self.acked.values().map(Vec::len).sum()
    }

    /// The longest time between two acknowledgements (of any chat) in
    /// `from..to`, counted from `from` and up to `to`.
    pub fn longest_ack_gap(&self, from: Instant, to: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .acked
            .values()
            .flatten()
            .map(|m| m.at)
            .filter(|at| (from..to).contains(at))
            .collect();
        times.push(from);
        times.push(to);
        times.sort();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// The 99th percentile of how long a message POST took to answer
    /// (any status), of those sent in `from..to`.
    pub fn post_p99(&self, from: Instant, to: Instant) -> Duration {
        let mut took: Vec<Duration> = self
            .attempts
            .iter()
            .filter(|a| (from..to).contains(&a.at))
            .map(|a| a.took)
            .collect();
        took.sort();
        took.get((took.len() * 99).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    }

    pub fn resets(&self) -> u64 {
        self.received.values().flatten().map(|r| r.resets).sum()
    }

    pub fn reconnects(&self) -> u64 {
        self.received.values().flatten().map(|r| r.reconnects).sum()
    }

    /// Checks that every acknowledged message reached every subscriber of
    /// its chat exactly once and in id order, and that the fetch API holds
    /// each exactly once. Panics with what went wrong; answers a one-line
    /// summary (acknowledged, delivered, lost, duplicated).
    pub async fn check(&self, cluster: &Cluster) -> String {
        self.check_with(Some(cluster)).await
    }

    /// As `check`, without the fetch API: for a broker that died for good
    /// before the projector had read everything (only a broker that comes
    /// back lets the read model catch up).
    pub async fn check_streams(&self) -> String {
        self.check_with(None).await
    }

    async fn check_with(&self, cluster: Option<&Cluster>) -> String {
        let mut delivered = 0usize;
        let (mut reactions_checked, mut reactions_acked) = (0usize, 0u64);
        let mut problems = Vec::new();
        for chat in &self.chats {
            let acked = self.acked.get(chat).cloned().unwrap_or_default();
            let acked_ids: HashSet<&str> = acked.iter().map(|m| m.id.as_str()).collect();
            // A text is posted once (its retries share its clientMessageId),
            // so two ids for one text are a duplicate.
            for (i, got) in self.received[chat].iter().enumerate() {
                let mut seen_ids = HashSet::new();
                let mut seen_texts: HashMap<&str, &str> = HashMap::new();
                let mut last = None;
                for (id, text) in &got.messages {
                    if !seen_ids.insert(id.as_str()) {
                        problems.push(format!("{chat} subscriber {i}: {id} twice"));
                    }
                    if let Some(other) = seen_texts.insert(text, id)
                        && other != id
                    {
                        problems.push(format!(
                            "{chat} subscriber {i}: {text:?} as {other} and as {id}"
                        ));
                    }
                    let offset = offset_of(id);
                    if last.is_some_and(|l| offset <= l) {
                        problems.push(format!("{chat} subscriber {i}: {id} out of order"));
                    }
                    last = Some(offset);
                }
                let missing: Vec<&&str> = acked_ids
                    .iter()
                    .filter(|id| !seen_ids.contains(**id))
                    .collect();
                if !missing.is_empty() {
                    problems.push(format!(
                        "{chat} subscriber {i} is missing {} acknowledged messages, e.g. {:?}",
                        missing.len(),
                        missing.iter().take(3).collect::<Vec<_>>()
                    ));
                }
                delivered += acked_ids
                    .iter()
                    .filter(|id| seen_ids.contains(**id))
                    .count();
            }
            let Some(cluster) = cluster else { continue };
            // The projector may still be catching up (a member that died
            // hands its partitions over after its session times out).
            let deadline = Instant::now() + Duration::from_secs(60);
            let fetched = loop {
                let fetched = cluster.fetch_all(chat).await;
                let ids: HashSet<&str> = fetched.iter().map(|(id, ..)| id.as_str()).collect();
                let reacted = fetched.iter().all(|(id, _, thumbs)| {
                    self.reactions
                        .get(id)
                        .is_none_or(|r| *thumbs >= r.acked.len() as u64)
                });
                if (acked_ids.is_subset(&ids) && reacted) || Instant::now() >= deadline {
                    break fetched;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let fetched_ids: HashSet<&str> = fetched.iter().map(|(id, ..)| id.as_str()).collect();
            // No reaction counted twice, none acknowledged lost: between the
            // adds acknowledged and the adds tried (a refused one may have
            // been stored all the same).
            for (id, _, thumbs) in &fetched {
                let Some(reacted) = self.reactions.get(id) else {
                    continue;
                };
                let (low, high) = (reacted.acked.len() as u64, reacted.tried.len() as u64);
                if *thumbs < low || *thumbs > high {
                    problems.push(format!(
                        "{chat}: {id} shows 👍 {thumbs}, where {low} adds were acknowledged of {high} tried"
                    ));
                }
                reactions_checked += 1;
                reactions_acked += low;
            }
            let mut texts = HashSet::new();
            for (id, text, _) in &fetched {
                if !texts.insert(text.as_str()) {
                    problems.push(format!(
                        "{chat}: fetch holds {text:?} twice (again as {id})"
                    ));
                }
            }
            let unfetchable = acked_ids
                .iter()
                .filter(|id| !fetched_ids.contains(**id))
                .count();
            if unfetchable > 0 {
                problems.push(format!(
                    "{chat}: {unfetchable} acknowledged messages not fetchable"
                ));
            }
        }
        let subscribers: usize =
            self.received.values().map(Vec::len).sum::<usize>() / self.chats.len().max(1);
        let expected = self.acked_total() * subscribers;
        let summary = format!(
            "acknowledged {}, delivered {delivered} of {expected} ({} subscribers per chat), lost {}, resets {}, reconnects {}; posts: {}; reactions: {reactions_acked} acknowledged on {reactions_checked} messages, none counted twice",
            self.acked_total(),
            subscribers,
            expected - delivered,
            self.resets(),
            self.reconnects(),
            self.outcomes.summary()
        );
        assert!(
            problems.is_empty(),
            "{summary}\n{}",
            problems
                .iter()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        summary
    }
}
