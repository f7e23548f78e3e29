//! One helper per service of a fault-suite cluster: a redis-server, a
//! Redis Cluster, Apache Kafka nodes and the workspace's servers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cluster::create_redis_cluster;
use crate::*;

/// Makes the services of one cluster: each in the cluster's folder, with
/// a port and a log of its own.
pub(crate) struct Launcher {
    pub(crate) dir: PathBuf,
}

impl Launcher {
    pub(crate) fn service(&self, name: &str, program: PathBuf, ready: Ready) -> Service {
        Service {
            name: name.to_owned(),
            port: free_port(),
            program,
            args: Vec::new(),
            env: vec![("RUST_LOG".into(), "warn".into())],
            ready,
            dir: self.dir.clone(),
            log: self.dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// A server binary of the workspace, told where Kafka and Redis are
    /// (`common`) and on which address to listen (`listen_var`), with the
    /// test's own `extra` settings last.
    pub(crate) fn server(
        &self,
        name: &str,
        binary: &str,
        listen_var: &str,
        common: &[(String, String)],
        own: &[(&str, String)],
        extra: &[(String, String)],
    ) -> Service {
        let mut s = self.service(name, workspace_bin(binary), Ready::Health);
        s.env.extend(common.iter().cloned());
        s.env
            .push((listen_var.to_owned(), format!("127.0.0.1:{}", s.port)));
        s.env
            .extend(own.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        s.env.extend(extra.iter().cloned());
        s
    }

    /// The single redis-server, with an append-only file.
    pub(crate) async fn redis(&self) -> Service {
        let mut redis = self.service("redis", "redis-server".into(), Ready::Tcp);
        redis.args = redis_args(
            redis.port,
            &self.dir,
            &["--appendonly", "yes", "--appendfsync", "always"],
        );
        redis.start().await;
        redis
    }

    /// Six redis-servers made one Redis Cluster (three masters, one
    /// replica each).
    pub(crate) async fn redis_cluster(&self) -> Vec<Service> {
        let mut nodes = Vec::new();
        for i in 0..6 {
            let mut node = self.service(
                &format!("redis-node-{i}"),
                "redis-server".into(),
                Ready::Tcp,
            );
            // Its cluster bus listens 10,000 higher.
            node.port = free_cluster_port();
            let node_dir = self.dir.join(format!("redis-node-{i}"));
            std::fs::create_dir_all(&node_dir).expect("node folder");
            node.args = redis_args(
                node.port,
                &node_dir,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--appendonly",
                    "no",
                ],
            );
            node.start().await;
            nodes.push(node);
        }
        create_redis_cluster(&nodes).await;
        nodes
    }

    /// `nodes` Apache Kafka nodes, waited for until every broker is up.
    pub(crate) async fn kafka(&self, nodes: usize) -> (KafkaNodes, Vec<Service>) {
        let config = KafkaNodes::prepare(&self.dir.join("kafka"), nodes, &[]);
        let mut kafka = Vec::new();
        for (i, port) in config.ports.iter().enumerate() {
            let (program, args) = config.command(i + 1);
            let mut node = self.service(&format!("kafka-{}", i + 1), program, Ready::Spawned);
            node.port = *port;
            node.args = args;
            node.env.clear();
            node.start().await;
            kafka.push(node);
        }
        config
            .until_brokers(config.ports[0], nodes, Duration::from_secs(120))
            .await;
        (config, kafka)
    }
}

/// A redis-server's arguments: listening on `port` of 127.0.0.1, keeping
/// its data in `dir` and writing no snapshots, then its `own` settings.
fn redis_args(port: u16, dir: &Path, own: &[&str]) -> Vec<String> {
    let port = port.to_string();
    let dir = dir.display().to_string();
    [
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--dir",
        &dir,
    ]
    .iter()
    .chain(own)
    .map(|&arg| arg.to_owned())
    .collect()
}
