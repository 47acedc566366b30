"""The takeaways of notebook 08 (continual learning), rendered from its committed results: which
model forgets least, whether CMS levels change forgetting against CMS off, HOPE's writes against
`hope_static`, configurations whose phase A learned nothing, and where phase B ends."""

from __future__ import annotations

from nlcore.report.notebook.ablations import separation
from nlcore.report.notebook.cite import Quote
from nlcore.report.notebook.compare import paired_differences

UNLEARNED_BPC = 3.0  # a phase-A valid bpc above this is no better than a model of character frequencies


def unlearned(runs) -> dict[str, list[tuple[int, float]]]:
    """{config: [(seed, valid bpc on A after phase A), ...]} of the runs whose phase A ended above
    UNLEARNED_BPC; `runs` has one row per config, metric, seed (an experiment's runs.csv)."""
    after_a = runs[(runs["metric"] == "a_valid_bpc_after_a") & (runs["value"] > UNLEARNED_BPC)]
    return {str(c): [(int(s), float(v)) for s, v in zip(g["seed"], g["value"])] for c, g in after_a.groupby("config")}


def continual_takeaways(q: Quote, full) -> str:
    """Markdown bullets for 08's takeaways; `full` holds the committed `summary` records and `runs`
    (one row per config, metric, seed), `q` quotes intervals and paired differences from them."""
    committed = {r["config"]: r["mean"] for r in full.summary if r["metric"] == "forgetting_bpc"}
    least, most = min(committed, key=committed.get), max(committed, key=committed.get)

    def verdict(a: str, b: str, metric: str) -> str:
        """'lower', 'higher' or 'not separated': the paired interval of a − b on the committed runs."""
        d = paired_differences(full.runs, {a: b}, metric=metric)
        return separation(d).iloc[0]

    cms_forget, cms_learn = verdict("nested_lstm", "nested_lstm_cms_off", "forgetting_bpc"), verdict(
        "nested_lstm", "nested_lstm_cms_off", "learning_bpc")
    if cms_forget == "lower":
        answer = (f"**Yes, at this scale, for the nested LSTM:** with its levels updated every 1, 16 and 256 steps it "
                  f"forgets less than with every level updated every step, and its learning of B is "
                  f"{'also lower: part of what it keeps, it keeps by learning less' if cms_learn == 'lower' else 'not lower: the levels keep A without slowing B' if cms_learn != 'higher' else 'even higher'}.")
    elif cms_forget == "higher":
        answer = ("**No, at this scale the opposite:** the nested LSTM with CMS forgets more than with CMS off.")
    else:
        answer = ("**Not at this scale:** the nested LSTM with CMS and with CMS off forget amounts whose paired "
                  "difference is not separated from zero over three seeds.")
    lines = [f"- **Every model forgets A while it learns B.** Over phase B the validation bpc on WikiText-2 rises least for `{least}` ({q.ci(least, 'forgetting_bpc')}) and most for `{most}` ({q.ci(most, 'forgetting_bpc')}); the bpc on Tiny Shakespeare falls by {q.ci(least, 'learning_bpc')} and {q.ci(most, 'learning_bpc')} for the same two.",
             f"- **CMS against CMS off (nested LSTM):** forgetting {q.ci('nested_lstm', 'forgetting_bpc')} against {q.ci('nested_lstm_cms_off', 'forgetting_bpc')}, paired {q.diff('nested_lstm', 'nested_lstm_cms_off', 'forgetting_bpc')} ({cms_forget}); learning {q.diff('nested_lstm', 'nested_lstm_cms_off', 'learning_bpc')} ({cms_learn})."]
    if "hope" in committed:
        lines.append(f"- **HOPE's chain, written in the forward pass or not:** `hope` forgets {q.ci('hope', 'forgetting_bpc')}, `hope_outer` {q.ci('hope_outer', 'forgetting_bpc')} and `hope_static` {q.ci('hope_static', 'forgetting_bpc')}; `hope` − `hope_static` is {q.diff('hope', 'hope_static', 'forgetting_bpc')} in forgetting ({verdict('hope', 'hope_static', 'forgetting_bpc')}) and {q.diff('hope', 'hope_static', 'learning_bpc')} in learning ({verdict('hope', 'hope_static', 'learning_bpc')}). "
                     "`hope_static` is the same network with its chain not written while it reads and every level trained every step by AdamW; `hope` writes its chain while it reads, and keeps writing while it is evaluated. Its bpc on A after phase B therefore measures the weights phase B left plus what the chain relearns of A within each evaluated article: the protocol's own notion of a model that keeps learning, not the weights alone.")
    for c, bad in unlearned(full.runs).items():
        lines.append(f"- **`{c}` is not comparable:** phase A left seed(s) {', '.join(str(s) for s, _ in bad)} at "
                     f"{', '.join(f'{v:.2f}' for _, v in bad)} valid bpc on A (above {UNLEARNED_BPC:g}: no better than a "
                     "model of character frequencies), so its forgetting starts from a model that had learned little of A.")
    others = [c for c in ("hope", "titans_linear", "nested_lstm") if c in committed]
    lines.append(f"- **Against the Transformer** ({q.ci('transformer', 'forgetting_bpc')}): " + ", ".join(
        f"`{c}` {q.diff(c, 'transformer', 'forgetting_bpc')} ({verdict(c, 'transformer', 'forgetting_bpc')})" for c in others) + ".")
    if "hope" in committed:
        lines.append(f"- **Where phase B ends:** `hope` ends at {q.ci('hope', 'a_valid_bpc_end')} on A and {q.ci('hope', 'b_valid_bpc_end')} on B, the Transformer at {q.ci('transformer', 'a_valid_bpc_end')} and {q.ci('transformer', 'b_valid_bpc_end')}; paired, `hope` − `transformer` is {q.diff('hope', 'transformer', 'b_valid_bpc_end')} on B ({verdict('hope', 'transformer', 'b_valid_bpc_end')}). "
                     f"Its smaller learning is a lower start, not a worse end: before any step on B, reading Tiny Shakespeare with its chain written in context, it is at {q.ci('hope', 'b_valid_bpc_after_a')} on B, against {q.ci('transformer', 'b_valid_bpc_after_a')} for the Transformer.")
    lines.append(f"- {answer}")
    return "\n".join(lines)
