"""Label: the next item by the chosen query strategy, the model's suggestion, label keys, skip and undo.

Other annotators' votes on an item stay hidden until you have voted on it (shown under "Your last label").
"""
import time

import streamlit as st

from core.active import strategies as active
from core.active.queue import next_items, shortcut_keys
from pages.common import require_annotator, require_store, show_item

store = require_store()
annotator = require_annotator()
st.title("Label")
labels = store.labels()
if not labels:
    st.warning("This project has no label set yet: import labelled data or create the project with labels.")
    st.stop()

strategies = active.list_strategies()
strategy = st.sidebar.selectbox("Query strategy", strategies, index=strategies.index("least_confidence"))
state = st.session_state
latest = store.run()
# a new model version refreshes the queue, so its suggestions and uncertainty take effect at once
key = (str(store.dir), annotator, strategy, latest["id"] if latest else None)
if state.get("queue_key") != key:
    state.update(queue_key=key, queue=[], skipped=set())


def refill() -> None:
    if not state["queue"]:
        state["queue"] = next_items(store, strategy=strategy, n=10, annotator=annotator, exclude=state["skipped"])
        state["shown_at"] = time.monotonic()


def record(item_id: int, label: str) -> None:
    # A key pressed again before the next item was drawn still carries the item just labelled (and an
    # interrupted rerun may not keep the queue's session state), so the store decides inside its write
    # transaction: one vote per annotator and item; changing one's mind goes through undo.
    seconds = time.monotonic() - state.get("shown_at", time.monotonic())
    if store.annotate(item_id, annotator, label, seconds=round(seconds, 3), first_vote_only=True) is None:
        state["undo_msg"] = "That key press came before the next item was shown; it was not recorded."
        state["queue"] = [q for q in state["queue"] if q["item_id"] != item_id]
        return
    state["last"] = item_id
    state["queue"] = [q for q in state["queue"] if q["item_id"] != item_id]
    state["shown_at"] = time.monotonic()


def skip(item_id: int) -> None:
    if not state["queue"] or state["queue"][0]["item_id"] != item_id:
        return
    state["skipped"].add(item_id)
    state["queue"] = [q for q in state["queue"] if q["item_id"] != item_id]
    state["shown_at"] = time.monotonic()


def undo() -> None:
    undone = store.undo_last(annotator)
    state["queue"] = [{"item_id": i} for i in undone] + [q for q in state["queue"] if q["item_id"] not in undone]
    state["undo_msg"] = f"Undid your label on {len(undone)} item(s)." if undone else "Nothing to undo."
    state.pop("last", None)


refill()
if not state["queue"]:
    st.success("Nothing left to label with this strategy. Retrain, or pick another strategy.")
    st.stop()
current = state["queue"][0]
item = store.item(current["item_id"])

left, right = st.columns([3, 2])
with left:
    show_item(item, width=360)
    st.caption(f"item {item.id} · {item.uri}")
with right:
    if current.get("suggestion") is not None:
        st.metric("Model suggests", current["suggestion"], f"confidence {current['confidence']:.0%}",
                  delta_color="off", delta_arrow="off")
    else:
        st.caption("No model suggestion yet.")
    keys = shortcut_keys(labels)
    cols = st.columns(min(len(labels), 5))
    for k, lab in enumerate(labels):
        cols[k % len(cols)].button(lab, key=f"lab-{lab}", shortcut=keys.get(lab),
                                   on_click=record, args=(item.id, lab), width="stretch", type="primary")
    c1, c2 = st.columns(2)
    c1.button("Skip", shortcut="Right", on_click=skip, args=(item.id,), width="stretch")
    c2.button("Undo last", shortcut="Backspace", on_click=undo, width="stretch")
    if state.get("undo_msg"):
        st.caption(state.pop("undo_msg"))

if state.get("last"):
    votes = store.active_votes([state["last"]])
    mine = [v["label"] for v in votes if v["annotator"] == annotator]
    others = [f"{v['annotator']}: {v['label']}" for v in votes if v["annotator"] != annotator]
    with st.expander("Your last label", expanded=False):
        st.write(f"item {state['last']}: you said **{mine[-1] if mine else '-'}**; "
                 f"others: {', '.join(others) if others else 'none yet'}")
