//! `retrace answer RUN [CALL] (--choice N | --text TEXT)`: answer the question (`user.ask`)
//! a parked run waits on. The answer is the question's recorded result; `retrace resume
//! RUN` continues the run (or `retrace serve` does, when it holds the store).

use std::path::Path;
use std::process::ExitCode;

use retrace_replay::{Answer, answer_question, pending_question};
use retrace_runtime::entropy::now;
use retrace_store::Store;

use crate::store_access;

pub fn run(
    dir: &Path,
    run: &str,
    call: Option<&str>,
    choice: Option<usize>,
    text: Option<&str>,
    by: &str,
) -> anyhow::Result<ExitCode> {
    let access = store_access::open_existing(dir)?;
    let store = access.store();
    let run = store.resolve_run(run)?;
    // on a PostgreSQL store, appended under the run's lease, so no worker drives it meanwhile
    let held = access.hold(run)?;
    let store = held
        .as_ref()
        .map_or(store, retrace_serve::held::Held::store);
    let request = retrace_serve::api::Answer {
        call: call.map(str::to_owned),
        choice,
        text: text.map(str::to_owned),
        by: Some(by.to_owned()),
    };
    let given = request.given().map_err(anyhow::Error::msg)?;
    if let Some(client) = access.daemon() {
        let answered = client.answer(&run.to_string(), &request)?;
        println!(
            "answered {} of run {}; retrace serve continues it",
            answered.call_id,
            run.short()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let asked = pending_question(&store, &run)?.map(|a| a.question.question);
    let (call_id, _) = answer_question(&store, &run, call, &given, by, now())?;
    let shown = match &given {
        Answer::Choice(n) => format!("choice {n}"),
        Answer::Text(_) => "a text".to_owned(),
    };
    println!(
        "answered {call_id} ({}) of run {} with {shown}; continue with: retrace resume {}",
        asked.unwrap_or_default(),
        run.short(),
        crate::target::to_resume(&store, &run)
    );
    Ok(ExitCode::SUCCESS)
}
