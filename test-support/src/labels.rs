//! The servers' metric labels stay bounded whatever clients send.

use std::collections::BTreeSet;

/// Sends `n` requests of made-up methods and `n` of made-up paths to the
/// server at `base` (`http://host:port`), then checks its `/metrics`: no
/// series names a made-up method or path, and they added at most a handful
/// of series of `http_requests_total` (`method="other"` and the route
/// `unmatched`, by status), not `n`. (Series that other tests in the same
/// process add meanwhile are not counted.)
pub async fn assert_made_up_requests_add_few_series(http: &reqwest::Client, base: &str, n: usize) {
    let tag = crate::unique("madeup").replace('-', "");
    let series = |text: &str| -> BTreeSet<String> {
        text.lines()
            .filter(|line| line.starts_with("http_requests_total{"))
            .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
            .collect()
    };
    let before = series(&crate::get_text(http, &format!("{base}/metrics")).await);
    for i in 0..n {
        let method = reqwest::Method::from_bytes(format!("X{tag}{i}").as_bytes()).expect("a token");
        let _ = http.request(method, format!("{base}/healthz")).send().await;
        let _ = http.get(format!("{base}/{tag}/{i}")).send().await;
    }
    let text = crate::get_text(http, &format!("{base}/metrics")).await;
    assert!(
        !text.contains(&tag),
        "a made-up method or path became a label"
    );
    let after = series(&text);
    let new: Vec<&String> = after
        .difference(&before)
        .filter(|s| s.contains("method=\"other\"") || s.contains("route=\"unmatched\""))
        .collect();
    assert!(
        new.len() <= 8,
        "{} made-up requests added {} series: {new:?}",
        2 * n,
        new.len()
    );
    assert!(
        after.iter().any(|s| s.contains("method=\"other\"")),
        "the made-up methods were counted as other: {after:?}"
    );
}
