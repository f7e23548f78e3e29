//! The scheduler's HTTP server keeps the bounds of the other servers: a
//! request head must fit in 8 KiB and arrive within the head timeout.

mod common;

use std::time::Duration;

use chat_core::serve::HEAD_TIMEOUT;
use common::World;
use test_support::raw_exchange as answer;

#[tokio::test]
async fn a_request_head_over_8_kib_is_431_and_a_dribbled_one_is_cut_off() {
    let world = World::new();
    let (scheduler, _) = world.scheduler(world.scheduler_config(40, 2)).await;
    let head = |filler: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: scheduler\r\nX-Filler: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(filler)
        )
    };
    let wait = Duration::from_secs(5);
    let (fits, _) = answer(scheduler.addr, &head(6 * 1024), wait).await;
    assert!(fits.starts_with("HTTP/1.1 200"), "{fits}");
    let (refused, _) = answer(scheduler.addr, &head(9 * 1024), wait).await;
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");

    // A head that never ends: closed once the head timeout has passed.
    let slack = Duration::from_secs(5);
    let (cut, took) = answer(
        scheduler.addr,
        "GET /healthz HTTP/1.1\r\nHost: scheduler\r\n",
        HEAD_TIMEOUT + slack,
    )
    .await;
    assert!(
        took >= HEAD_TIMEOUT - Duration::from_secs(1) && took < HEAD_TIMEOUT + slack,
        "closed after {took:?} (head timeout {HEAD_TIMEOUT:?})"
    );
    assert!(
        cut.is_empty() || cut.starts_with("HTTP/1.1 408"),
        "no answer but a timeout: {cut}"
    );
    scheduler.stop().await;
}

/// Any token is an HTTP method and any path can be asked: neither may
/// become a metric label.
#[tokio::test]
async fn made_up_methods_and_paths_add_no_metric_series_of_their_own() {
    let world = World::new();
    let (scheduler, _) = world.scheduler(world.scheduler_config(40, 2)).await;
    test_support::labels::assert_made_up_requests_add_few_series(
        &world.http,
        &scheduler.url(""),
        200,
    )
    .await;
    scheduler.stop().await;
}
