//! publish-server's delay histograms, scraped from `/metrics` before and
//! after the posting, so that the figures cover the measured posts only.

use std::collections::HashMap;
use std::time::Duration;

/// Per histogram, its cumulative count per bucket bound (seconds), summed
/// over the servers.
pub(crate) type Buckets = HashMap<String, Vec<(f64, f64)>>;

/// Scrapes every `{url}/metrics`; a server that does not answer adds
/// nothing.
pub(crate) async fn scrape(urls: &[String]) -> Buckets {
    let mut buckets: HashMap<String, HashMap<u64, (f64, f64)>> = HashMap::new();
    let http = reqwest::Client::new();
    for url in urls {
        let Ok(response) = http
            .get(format!("{}/metrics", url.trim_end_matches('/')))
            .timeout(Duration::from_secs(10))
            .send()
            .await
        else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        for (name, le, count) in text.lines().filter_map(bucket_line) {
            let slot = buckets
                .entry(name.to_owned())
                .or_default()
                .entry(le.to_bits())
                .or_insert((le, 0.0));
            slot.1 += count;
        }
    }
    buckets
        .into_iter()
        .map(|(name, by_le)| {
            let mut list: Vec<(f64, f64)> = by_le.into_values().collect();
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, list)
        })
        .collect()
}

/// Waits (10 s at most) until every server has counted at least one sample
/// of `name`: the warm-up post, read, before the figures start.
pub(crate) async fn until_each_counted(urls: &[String], name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for url in urls {
        let one = std::slice::from_ref(url);
        while tokio::time::Instant::now() < deadline {
            let counted = scrape(one)
                .await
                .get(name)
                .and_then(|b| b.last().map(|(_, c)| *c))
                .unwrap_or(0.0);
            if counted >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `name_bucket{...le="0.005"...} 12` as `(name, 0.005, 12)`.
fn bucket_line(line: &str) -> Option<(&str, f64, f64)> {
    let (name, rest) = line.split_once("_bucket{")?;
    let le = rest.split("le=\"").nth(1)?.split('"').next()?;
    let le = if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().ok()?
    };
    let count = line.rsplit(' ').next()?.parse().ok()?;
    Some((name, le, count))
}

/// The bound (ms) of the first bucket holding 99 % of what `name` counted
/// between the two scrapes; `None` without samples or past the last bound.
pub(crate) fn p99_le_ms(before: &Buckets, after: &Buckets, name: &str) -> Option<f64> {
    let after = after.get(name)?;
    let earlier = |le: f64| {
        before
            .get(name)
            .and_then(|b| b.iter().find(|(l, _)| *l == le))
            .map_or(0.0, |(_, c)| *c)
    };
    let delta: Vec<(f64, f64)> = after.iter().map(|&(le, c)| (le, c - earlier(le))).collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    delta
        .iter()
        .find(|(_, c)| *c >= 0.99 * total)
        .filter(|(le, _)| le.is_finite())
        .map(|(le, _)| le * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p99_bound_counts_only_what_came_between_the_scrapes() {
        let line =
            |le: &str, n: u64| format!("publish_fanout_delay_seconds_bucket{{le=\"{le}\"}} {n}");
        let parse = |lines: &[String]| -> Buckets {
            let mut b: Buckets = HashMap::new();
            for (name, le, c) in lines.iter().filter_map(|l| bucket_line(l)) {
                b.entry(name.to_owned()).or_default().push((le, c));
            }
            b
        };
        // Before: five slow samples (warm-up). Between: 100 fast ones.
        let before = parse(&[line("0.001", 0), line("1", 5), line("+Inf", 5)]);
        let after = parse(&[line("0.001", 100), line("1", 105), line("+Inf", 105)]);
        let name = "publish_fanout_delay_seconds";
        assert_eq!(p99_le_ms(&before, &after, name), Some(1.0));
        assert_eq!(p99_le_ms(&parse(&[]), &after, name), Some(1000.0));
        assert_eq!(p99_le_ms(&after, &after, name), None);
    }
}
