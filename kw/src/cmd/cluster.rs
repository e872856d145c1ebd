//! `kw cluster`: cluster id, controller and brokers.

use clap::Args;

use crate::conn::ConnArgs;
use crate::error::{Context, Result};
use crate::output::{print_table, println};
use crate::Top;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  kw cluster -b broker1:9092")]
pub struct ClusterArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
}

pub async fn run(args: ClusterArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let cluster = admin.describe_cluster().await.context(|| "cannot describe the cluster".into())?;
    println(format!("Cluster ID: {}", cluster.cluster_id))?;
    println(format!("Controller: {}", cluster.controller_id.map_or_else(|| "none".to_string(), |c| c.to_string())))?;
    let mut brokers = cluster.brokers.clone();
    brokers.sort_by_key(|b| b.node_id);
    println(format!("Brokers: {}", brokers.len()))?;
    let rows: Vec<Vec<String>> = brokers
        .iter()
        .map(|b| {
            vec![
                b.node_id.to_string(),
                b.addr(),
                b.rack.clone().unwrap_or_else(|| "-".into()),
                if Some(b.node_id) == cluster.controller_id { "*".into() } else { String::new() },
            ]
        })
        .collect();
    print_table(&["ID", "ADDRESS", "RACK", "CONTROLLER"], &rows)
}
