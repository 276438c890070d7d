//! Approvals the executor asks for: a call the policy asks about (allowed at once when a
//! trust rule and the recorded track record say so, see [`crate::autonomy`]) and a soft
//! budget's escalation.

use retrace_events::{Decision, EventKind, ProposedCall, RunId};
use serde_json::{Value, json};

use super::{Error, Runner};
use crate::autonomy::{self, Level};

impl Runner<'_> {
    /// The approval request of `call`, and, when trust rule `autonomy` allows it (an
    /// `autonomous` level, or a `semi` one whose track record promotes), its automatic
    /// approval in the same append, with the evidence.
    pub(super) fn ask_approval(
        &self,
        run: RunId,
        call: &ProposedCall,
        reason: &str,
        autonomy: Option<usize>,
    ) -> Result<Vec<EventKind>, Error> {
        let args: Value = self.blob_json(run, &call.args)?;
        let mut request = json!({"tool": call.tool, "args": args, "reason": reason});
        let allowed = match autonomy.and_then(|i| self.spec.autonomy.get(i).map(|r| (i, r))) {
            Some((i, rule)) if rule.level == Level::Autonomous => {
                request["autonomy"] = json!({
                    "rule": i,
                    "tool": rule.tool,
                    "pattern": rule.glob(),
                    "level": rule.level,
                    "approvals": 0,
                    "needed": 0,
                    "evidence": [],
                });
                Some(format!(
                    "allowed without asking: autonomy rule {i} trusts `{}` as autonomous",
                    rule.tool
                ))
            }
            Some((i, rule)) => {
                let tiers = |tool: &str| self.agent.tools.get(tool).map(|m| m.tier);
                let decided = autonomy::track_record(self.store, &self.spec.name, rule, &tiers)?;
                let record = autonomy::evaluate(i, rule, decided);
                tracing::debug!(
                    rule = i,
                    approvals = record.approvals,
                    needed = record.needed,
                    "track record"
                );
                if !record.promotes() {
                    // the person asked sees how far the track record is
                    request["reason"] = json!(format!(
                        "{reason}; autonomy rule {i}: {} of {} human approvals in a row so far",
                        record.approvals, record.needed
                    ));
                }
                record.promotes().then(|| {
                    request["autonomy"] = record.to_json(rule);
                    format!(
                        "allowed without asking: {} approvals of `{}`{} in a row by humans, no denial since (autonomy rule {i} promotes after {})",
                        record.approvals,
                        rule.tool,
                        rule.glob().map(|g| format!(" on `{g}`")).unwrap_or_default(),
                        record.needed
                    )
                })
            }
            None => None,
        };
        let mut kinds = vec![EventKind::ApprovalRequested {
            call_id: call.call_id.clone(),
            request: self.put_json(&request)?,
        }];
        if let Some(why) = allowed {
            kinds.push(EventKind::ApprovalDecided {
                call_id: call.call_id.clone(),
                decision: Decision::Approved,
                by: autonomy::BY.to_owned(),
                note: Some(self.put_json(&json!(why))?),
            });
        }
        Ok(kinds)
    }

    /// The approval a soft budget's escalation asks for: with the figures, as a call of
    /// the pseudo-tool `budget.escalation` so that every view of approvals shows it.
    pub(super) fn escalate(
        &self,
        call_id: String,
        budget: &str,
        spent: u64,
        limit: u64,
        reason: &str,
    ) -> Result<Vec<EventKind>, Error> {
        let figures = json!({"budget": budget, "soft": limit, "spent": spent});
        let request = self.put_json(&json!({
            "tool": crate::decide::ESCALATION_TOOL,
            "args": figures,
            "reason": reason,
            "escalation": figures,
        }))?;
        Ok(vec![EventKind::ApprovalRequested { call_id, request }])
    }
}
