//! The three servers in the test's process, configured and started one
//! way for every crate's tests: port 0, the test's own topic and Redis
//! prefix ([`Corner`]), bound, run, and waited for [`Until`] ready or
//! serving.

use clap::Parser as _;

use crate::{Corner, Running, Until, unique};

/// A chat-server configuration for `corner`: its projector in a group of
/// its own named after `group`, and the per-user write limits off (tests
/// post fast as few users; the limits have tests of their own).
pub fn chat_config(corner: &Corner, group: &str) -> chat_server::Config {
    let mut config = chat_server::Config::parse_from(["chat-server"]);
    corner.apply(&mut config.listen, &mut config.kafka, &mut config.redis);
    config.projector.group = unique(group);
    config.writes.user_messages_per_sec = 0;
    config.writes.user_reactions_per_sec = 0;
    config
}

/// A publish-server configuration for `corner`.
pub fn publish_config(corner: &Corner) -> publish_server::Config {
    let mut config = publish_server::Config::parse_from(["publish-server"]);
    corner.apply(&mut config.listen, &mut config.kafka, &mut config.redis);
    config
}

/// A chat-server of `config`, running in this process.
pub async fn chat_server(
    http: &reqwest::Client,
    config: chat_server::Config,
    until: Until,
) -> Running {
    let server = chat_server::Server::bind(config)
        .await
        .expect("chat-server binds");
    let addr = server.local_addr();
    let hot = server.hot_chats();
    Running::start(http, addr, server, chat_server::Server::run, until)
        .await
        .knowing_hot(hot)
}

/// A publish-server of `config`, running in this process.
pub async fn publish_server(
    http: &reqwest::Client,
    config: publish_server::Config,
    until: Until,
) -> Running {
    let server = publish_server::Server::bind(config)
        .await
        .expect("publish-server binds");
    let addr = server.local_addr();
    let hot = server.hot_chats();
    Running::start(http, addr, server, publish_server::Server::run, until)
        .await
        .knowing_hot(hot)
}

/// A scheduler of `config`, running in this process, with its state.
pub async fn scheduler(
    http: &reqwest::Client,
    config: scheduler::Config,
    until: Until,
) -> (Running, scheduler::AppState) {
    let scheduler = scheduler::Scheduler::bind(config)
        .await
        .expect("scheduler binds");
    let state = scheduler.state();
    let addr = scheduler.local_addr();
    let running = Running::start(http, addr, scheduler, scheduler::Scheduler::run, until).await;
    (running, state)
}
