//! `kw groups list|describe|delete|reset-offsets`.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};
use kafka_wire::client::{Admin, GroupListing, OffsetSpec};
use kafka_wire::{ErrorCode, ErrorKind};

use crate::conn::ConnArgs;
use crate::error::{runtime, usage, Context, Failure, Result};
use crate::output::{print_table, println};
use crate::Top;

#[derive(Subcommand, Debug)]
pub enum GroupsCommand {
    /// List groups, one per line
    #[command(after_help = "Examples:\n  kw groups list\n  kw groups list --long")]
    List(ListArgs),
    /// State, members, and committed offset, end offset and lag of every partition
    #[command(
        after_help = "Example:\n  kw groups describe billing\n\nThe table has the columns of kafka-consumer-groups.sh --describe."
    )]
    Describe(DescribeArgs),
    /// Delete groups (only groups without active members)
    #[command(after_help = "Example:\n  kw groups delete old-billing")]
    Delete(DeleteArgs),
    /// Plan, and with --execute apply, new committed offsets for a group
    #[command(
        name = "reset-offsets",
        after_help = "Without --execute this is a dry run: the plan is printed and nothing changes. \
The group must have no active members to be reset. Offsets outside a partition's range are \
moved to its nearest end, as kafka-consumer-groups.sh does.\n\n\
Examples:\n  kw groups reset-offsets billing --topic events --to-earliest\n  \
kw groups reset-offsets billing --topic events:0,1 --to-offset 42 --execute\n  \
kw groups reset-offsets billing --all-topics --to-datetime 1700000000000 --execute"
    )]
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Also show the group's type, protocol type and state
    #[arg(short = 'l', long)]
    pub long: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Groups to describe
    #[arg(required = true, value_name = "GROUP")]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Groups to delete
    #[arg(required = true, value_name = "GROUP")]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// The group
    pub group: String,
    /// Topic to reset, all partitions (T) or some (T:0,1,2); repeatable
    #[arg(long = "topic", value_name = "T[:P,...]", required_unless_present = "all_topics")]
    pub topics: Vec<String>,
    /// Every topic the group has committed offsets for
    #[arg(long, conflicts_with = "topics")]
    pub all_topics: bool,
    #[command(flatten)]
    pub target: Target,
    /// Apply the plan (default: dry run)
    #[arg(long)]
    pub execute: bool,
    /// Only print the plan (the default)
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// To the earliest offset
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end offset
    #[arg(long)]
    pub to_latest: bool,
    /// To offset N
    #[arg(long, value_name = "N")]
    pub to_offset: Option<i64>,
    /// To the first offset at or after MS milliseconds since the epoch (the end if none)
    #[arg(long, value_name = "MS")]
    pub to_datetime: Option<i64>,
    /// Move the committed offset by N (may be negative)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
}

pub async fn run(command: GroupsCommand, top: &Top) -> Result<()> {
    match command {
        GroupsCommand::List(a) => list(a, top).await,
        GroupsCommand::Describe(a) => describe(a, top).await,
        GroupsCommand::Delete(a) => delete(a, top).await,
        GroupsCommand::ResetOffsets(a) => reset_offsets(a, top).await,
    }
}

async fn list(args: ListArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    let groups = admin.list_groups().await.context(|| "cannot list groups".into())?;
    if args.long {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                vec![
                    g.group_id.clone(),
                    g.group_type.clone().unwrap_or_else(|| "-".into()),
                    if g.protocol_type.is_empty() { "-".into() } else { g.protocol_type.clone() },
                    g.state.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        print_table(&["GROUP", "TYPE", "PROTOCOL-TYPE", "STATE"], &rows)
    } else {
        for g in &groups {
            println(&g.group_id)?;
        }
        Ok(())
    }
}

/// A member as the group describes it.
struct Member {
    id: String,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

/// What DescribeGroups or ConsumerGroupDescribe says about a group.
struct GroupInfo {
    state: String,
    kind: String,
    assignor: String,
    members: Vec<Member>,
}

async fn group_listing(admin: &Admin, group: &str) -> Result<Option<GroupListing>> {
    let groups = admin.list_groups().await.context(|| "cannot list groups".into())?;
    Ok(groups.into_iter().find(|g| g.group_id == group))
}

/// Members and state: ConsumerGroupDescribe for groups of the consumer protocol (KIP-848),
/// DescribeGroups for classic groups. `None` if the group is not described (it does not exist
/// as a group, only as committed offsets, or the broker refuses).
async fn group_info(admin: &Admin, group: &str, listing: Option<&GroupListing>) -> Result<Option<GroupInfo>> {
    if listing.and_then(|l| l.group_type.as_deref()) == Some("consumer") {
        let g = match admin.describe_consumer_groups(&[group]).await {
            Ok(mut d) if !d.is_empty() => d.remove(0),
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Broker => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        return Ok(Some(GroupInfo {
            state: g.state,
            kind: "consumer".into(),
            assignor: g.assignor,
            members: g
                .members
                .into_iter()
                .map(|m| Member {
                    id: m.member_id,
                    client_id: m.client_id,
                    host: m.client_host,
                    partitions: m
                        .assignment
                        .into_iter()
                        .flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic.clone(), p)))
                        .collect(),
                })
                .collect(),
        }));
    }
    match admin.describe_groups(&[group]).await {
        Ok(mut d) if !d.is_empty() => {
            let d = d.remove(0);
            Ok(Some(GroupInfo {
                state: d.state.clone(),
                kind: if d.protocol_type.is_empty() {
                    "classic".into()
                } else {
                    format!("classic/{}", d.protocol_type)
                },
                assignor: d.protocol.clone(),
                members: d
                    .members
                    .iter()
                    .map(|m| Member {
                        id: m.member_id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.client_host.clone(),
                        partitions: m
                            .assigned_partitions()
                            .unwrap_or_default()
                            .into_iter()
                            .flat_map(|(t, ps)| ps.into_iter().map(move |p| (t.clone(), p)))
                            .collect(),
                    })
                    .collect(),
            }))
        }
        Ok(_) => Ok(None),
        Err(e) if e.code() == Some(ErrorCode::GROUP_ID_NOT_FOUND) => Ok(None),
        Err(e) => Err(runtime(format!("cannot describe group '{group}': {}", crate::error::describe(&e)))),
    }
}

/// End offsets of partitions, `None` where they cannot be listed (a deleted topic).
async fn end_offsets(admin: &Admin, tps: &BTreeSet<(String, i32)>) -> BTreeMap<(String, i32), i64> {
    let pairs: Vec<(&str, i32)> = tps.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let mut out = BTreeMap::new();
    match admin.list_offsets(&pairs, OffsetSpec::Latest).await {
        Ok(listed) => {
            for o in listed {
                out.insert((o.topic, o.partition), o.offset);
            }
        }
        Err(_) => {
            // One topic at a time, so that one deleted topic does not hide the others.
            let topics: BTreeSet<&str> = tps.iter().map(|(t, _)| t.as_str()).collect();
            for topic in topics {
                let pairs: Vec<(&str, i32)> =
                    tps.iter().filter(|(t, _)| t == topic).map(|(t, p)| (t.as_str(), *p)).collect();
                if let Ok(listed) = admin.list_offsets(&pairs, OffsetSpec::Latest).await {
                    for o in listed {
                        out.insert((o.topic, o.partition), o.offset);
                    }
                }
            }
        }
    }
    out
}

async fn describe(args: DescribeArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    for (i, group) in args.groups.iter().enumerate() {
        if i > 0 {
            println("")?;
        }
        describe_one(&admin, group).await?;
    }
    Ok(())
}

async fn describe_one(admin: &Admin, group: &str) -> Result<()> {
    let listing = group_listing(admin, group).await?;
    let committed = admin
        .list_group_offsets(group, None)
        .await
        .context(|| format!("cannot fetch the committed offsets of group '{group}'"))?;
    let info = group_info(admin, group, listing.as_ref()).await?;
    if listing.is_none() && committed.is_empty() && info.is_none() {
        return Err(runtime(format!("group '{group}' does not exist")));
    }
    let state = info
        .as_ref()
        .map(|i| i.state.clone())
        .or_else(|| listing.as_ref().and_then(|l| l.state.clone()))
        .unwrap_or_else(|| "-".into());
    let members = info.as_ref().map_or(&[][..], |i| &i.members[..]);
    print_table(
        &["GROUP", "STATE", "TYPE", "ASSIGNOR", "MEMBERS"],
        &[vec![
            group.to_owned(),
            state,
            info.as_ref().map_or_else(|| "-".into(), |i| i.kind.clone()),
            info.as_ref().map(|i| i.assignor.clone()).filter(|a| !a.is_empty()).unwrap_or_else(|| "-".into()),
            members.len().to_string(),
        ]],
    )?;
    println("")?;

    let mut owner: BTreeMap<(String, i32), &Member> = BTreeMap::new();
    for m in members {
        for tp in &m.partitions {
            owner.insert(tp.clone(), m);
        }
    }
    let committed: BTreeMap<(String, i32), i64> =
        committed.into_iter().map(|o| ((o.topic, o.partition), o.offset)).collect();
    let tps: BTreeSet<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
    let ends = end_offsets(admin, &tps).await;
    let dash = || "-".to_string();
    let rows: Vec<Vec<String>> = tps
        .iter()
        .map(|tp| {
            let current = committed.get(tp).copied().filter(|o| *o >= 0);
            let end = ends.get(tp).copied();
            let lag = match (current, end) {
                (Some(c), Some(e)) => (e - c).max(0).to_string(),
                _ => dash(),
            };
            let m = owner.get(tp);
            vec![
                group.to_owned(),
                tp.0.clone(),
                tp.1.to_string(),
                current.map_or_else(dash, |c| c.to_string()),
                end.map_or_else(dash, |e| e.to_string()),
                lag,
                m.map_or_else(dash, |m| m.id.clone()),
                m.map_or_else(dash, |m| m.host.clone()),
                m.map_or_else(dash, |m| m.client_id.clone()),
            ]
        })
        .collect();
    if rows.is_empty() {
        println(format!("Group '{group}' has no committed offsets and no assigned partitions."))?;
    } else {
        print_table(
            &[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "LOG-END-OFFSET",
                "LAG",
                "CONSUMER-ID",
                "HOST",
                "CLIENT-ID",
            ],
            &rows,
        )?;
    }
    if !members.is_empty() {
        println("")?;
        let rows: Vec<Vec<String>> = members
            .iter()
            .map(|m| {
                let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                for (t, p) in &m.partitions {
                    by_topic.entry(t.as_str()).or_default().push(*p);
                }
                let assignment = by_topic
                    .iter_mut()
                    .map(|(t, ps)| {
                        ps.sort_unstable();
                        format!("{t}({})", ps.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                vec![
                    m.id.clone(),
                    m.host.clone(),
                    m.client_id.clone(),
                    m.partitions.len().to_string(),
                    if assignment.is_empty() { "-".into() } else { assignment },
                ]
            })
            .collect();
        print_table(&["CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS", "ASSIGNMENT"], &rows)?;
    }
    Ok(())
}

async fn delete(args: DeleteArgs, top: &Top) -> Result<()> {
    let admin = top.settings(&args.conn)?.admin().await?;
    admin.delete_groups(&args.groups).await.map_err(|e| {
        let hint = match e.code() {
            Some(c) if c == ErrorCode::GROUP_ID_NOT_FOUND => ": the group does not exist",
            Some(c) if c == ErrorCode::NON_EMPTY_GROUP => ": the group has active members",
            _ => "",
        };
        runtime(format!("cannot delete: {}{hint}", crate::error::describe(&e)))
    })?;
    for g in &args.groups {
        eprintln!("kw: deleted group '{g}'");
    }
    Ok(())
}

/// `T` or `T:0,1,2`.
fn parse_topic_spec(s: &str) -> Result<(String, Option<Vec<i32>>)> {
    match s.split_once(':') {
        None => Ok((s.to_owned(), None)),
        Some((t, ps)) => {
            let parts: Result<Vec<i32>, _> = ps.split(',').map(|p| p.trim().parse::<i32>()).collect();
            match parts {
                Ok(p) if !t.is_empty() && !p.is_empty() => Ok((t.to_owned(), Some(p))),
                _ => Err(usage(format!("--topic {s}: expected TOPIC or TOPIC:P1,P2,..."))),
            }
        }
    }
}

async fn reset_offsets(args: ResetArgs, top: &Top) -> Result<()> {
    let specs: Vec<(String, Option<Vec<i32>>)> =
        args.topics.iter().map(|s| parse_topic_spec(s)).collect::<Result<_>>()?;
    let admin = top.settings(&args.conn)?.admin().await?;
    let group = args.group.as_str();

    let committed_all = admin
        .list_group_offsets(group, None)
        .await
        .context(|| format!("cannot fetch the committed offsets of group '{group}'"))?;
    let mut tps: BTreeSet<(String, i32)> = BTreeSet::new();
    if args.all_topics {
        tps.extend(committed_all.iter().map(|o| (o.topic.clone(), o.partition)));
        if tps.is_empty() {
            return Err(runtime(format!("group '{group}' has no committed offsets (--all-topics)")));
        }
    } else {
        let names: Vec<String> = specs.iter().map(|(t, _)| t.clone()).collect();
        let existing = super::topic_partitions(admin.client(), &names, super::TOPIC_WAIT.min(admin.timeout())).await?;
        for ((topic, wanted), (_, partitions)) in specs.iter().zip(&existing) {
            match wanted {
                None => tps.extend(partitions.iter().map(|p| (topic.clone(), *p))),
                Some(ps) => {
                    for p in ps {
                        if !partitions.contains(p) {
                            return Err(runtime(format!("partition {p} does not exist in topic '{topic}'")));
                        }
                        tps.insert((topic.clone(), *p));
                    }
                }
            }
        }
    }
    let committed: BTreeMap<(String, i32), i64> =
        committed_all.into_iter().map(|o| ((o.topic, o.partition), o.offset)).collect();
    let pairs: Vec<(&str, i32)> = tps.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let listed = |spec| {
        let admin = admin.clone();
        let pairs = pairs.clone();
        async move {
            admin
                .list_offsets(&pairs, spec)
                .await
                .map(|v| v.into_iter().map(|o| ((o.topic, o.partition), o.offset)).collect::<BTreeMap<_, _>>())
                .context(|| "cannot list offsets".into())
        }
    };
    let earliest = listed(OffsetSpec::Earliest).await?;
    let latest = listed(OffsetSpec::Latest).await?;
    let at_time = match args.target.to_datetime {
        Some(ms) => Some(listed(OffsetSpec::Timestamp(ms)).await?),
        None => None,
    };

    let mut plan: Vec<((String, i32), Option<i64>, i64)> = Vec::new();
    for tp in &tps {
        let lo = earliest.get(tp).copied().unwrap_or(0);
        let hi = latest.get(tp).copied().unwrap_or(lo);
        let current = committed.get(tp).copied().filter(|o| *o >= 0);
        let t = &args.target;
        let target = if t.to_earliest {
            lo
        } else if t.to_latest {
            hi
        } else if let Some(o) = t.to_offset {
            o
        } else if let Some(n) = t.shift_by {
            // Like kafka-consumer-groups.sh, a partition without a committed offset shifts from
            // the end.
            current.unwrap_or(hi) + n
        } else {
            match at_time.as_ref().and_then(|m| m.get(tp)).copied() {
                Some(o) if o >= 0 => o,
                _ => hi,
            }
        };
        plan.push((tp.clone(), current, target.clamp(lo, hi.max(lo))));
    }

    let listing = group_listing(&admin, group).await?;
    let state = listing.as_ref().and_then(|l| l.state.clone());
    let active = state.as_deref().is_some_and(|s| s != "Empty" && s != "Dead");

    let rows: Vec<Vec<String>> = plan
        .iter()
        .map(|((t, p), cur, new)| {
            vec![
                group.to_owned(),
                t.clone(),
                p.to_string(),
                cur.map_or_else(|| "-".into(), |c| c.to_string()),
                new.to_string(),
            ]
        })
        .collect();
    print_table(&["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"], &rows)?;

    if !args.execute {
        if active {
            eprintln!(
                "kw: note: group '{group}' is {} (it has active members): it must be stopped before --execute",
                state.unwrap_or_default()
            );
        }
        eprintln!("kw: dry run: nothing changed (add --execute to apply)");
        return Ok(());
    }
    if active {
        return Err(runtime(format!(
            "offsets of group '{group}' can only be reset while it has no active members; its state is {}",
            state.unwrap_or_default()
        )));
    }
    let offsets: Vec<(&str, i32, i64)> = plan.iter().map(|((t, p), _, new)| (t.as_str(), *p, *new)).collect();
    admin.alter_group_offsets(group, &offsets).await.map_err(|e| {
        if e.code() == Some(ErrorCode::UNKNOWN_MEMBER_ID) {
            runtime(format!("offsets of group '{group}' can only be reset while it has no active members"))
        } else {
            Failure::Runtime(format!("cannot reset offsets of group '{group}': {}", crate::error::describe(&e)))
        }
    })?;
    eprintln!("kw: reset {} partition offset{} of group '{group}'", plan.len(), if plan.len() == 1 { "" } else { "s" });
    Ok(())
}
