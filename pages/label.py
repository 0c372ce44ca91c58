"""Label: the next item by the chosen query strategy, the model's suggestion, label keys, skip and undo.

Other annotators' votes on an item stay hidden until you have voted on it (shown under "Your last label").
"""
import time

import streamlit as st
from streamlit.runtime.media_file_storage import MediaFileStorageError

from core.active import strategies as active
from core.active.queue import next_items, shortcut_keys
from core.features.project import features_signature
from core.views.similar import item_index, label_similar, more_like_this
from core.views.suggestions import item_suggestion, suggestion_source
from core.views.text import md_literal
from pages.auth import can
from pages.common import item_grid, require_annotator, require_store, show_item

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
        batch = next_items(store, strategy=strategy, n=10, annotator=annotator, exclude=state["skipped"])
        state["queue"], state["queue_notes"] = list(batch), batch.notes  # notes: e.g. why dedup is off
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


def label_near(item_ids: list[int], label: str) -> None:
    done = label_similar(store, item_ids, label, annotator=annotator)
    state["queue"] = [q for q in state["queue"] if q["item_id"] not in set(done)]
    state["undo_msg"] = (f"Labelled {len(done)} similar item(s) '{md_literal(label)}' in one action; "
                         "Undo last undoes it.")


@st.cache_resource(max_entries=2, show_spinner="Indexing the features...")
def neighbour_index(project: str, signature: tuple):
    return item_index(store)  # faiss, over every item with cached features; rebuilt when the cache changes


def undo() -> None:
    undone = store.undo_last(annotator)
    state["queue"] = [{"item_id": i} for i in undone] + [q for q in state["queue"] if q["item_id"] not in undone]
    state["undo_msg"] = f"Undid your label on {len(undone)} item(s)." if undone else "Nothing to undo."
    state.pop("last", None)


def show_current(item) -> bool:
    # a missing or unreadable media file must not stop the page: say which file, keep Skip and Undo usable
    problem = "is missing" if item.path is not None and not item.path.is_file() else None
    if problem is None:
        try:
            show_item(item, width=360)
            return True
        except (MediaFileStorageError, OSError) as exc:
            problem = f"cannot be read ({exc})"
    st.error(f"The media file of item {item.id} {md_literal(problem)}: {md_literal(item.path)}. Press Skip to "
             "move on (Undo still works); an admin can put the file back or import it again.")
    return False


refill()
if not state["queue"]:
    st.success("Nothing left to label with this strategy. Retrain, or pick another strategy.")
    st.stop()
current = state["queue"][0]
item = store.item(current["item_id"])

left, right = st.columns([3, 2])
with left:
    shown = show_current(item)
    st.caption(f"item {item.id} · {md_literal(item.uri)}")
    for note in state.get("queue_notes", []):
        st.caption(f":material/info: {note}")
with right:
    hint = item_suggestion(store, item.id)  # a class, or "cluster N" for a run trained without labels
    if hint is not None:
        st.metric(hint["title"], md_literal(hint["text"]), f"confidence {hint['confidence'] or 0:.0%}",
                  delta_color="off", delta_arrow="off")
    else:
        st.caption("No model suggestion yet.")
    source = suggestion_source(store)  # which run, how old; and a newer model in training
    if source:
        st.caption(source)
    keys = shortcut_keys(labels)
    cols = st.columns(min(len(labels), 5))
    for k, lab in enumerate(labels):
        cols[k % len(cols)].button(md_literal(lab), key=f"lab-{lab}", shortcut=keys.get(lab),
                                   on_click=record, args=(item.id, lab), width="stretch", type="primary",
                                   disabled=not shown)
    c1, c2 = st.columns(2)
    c1.button("Skip", shortcut="Right", on_click=skip, args=(item.id,), width="stretch")
    c2.button("Undo last", shortcut="Backspace", on_click=undo, width="stretch")
    if state.get("undo_msg"):
        st.caption(state.pop("undo_msg"))

if state.get("last"):
    votes = store.active_votes([state["last"]])
    mine = [md_literal(v["label"]) for v in votes if v["annotator"] == annotator]
    others = [f"{md_literal(v['annotator'])}: {md_literal(v['label'])}" for v in votes if v["annotator"] != annotator]
    with st.expander("Your last label", expanded=False):
        st.write(f"item {state['last']}: you said **{mine[-1] if mine else '-'}**; "
                 f"others: {', '.join(others) if others else 'none yet'}")

if st.toggle("More like this", key="more-like-this", help="this item's nearest neighbours on the cached features"):
    index = neighbour_index(str(store.dir), features_signature(store))
    near = more_like_this(store, index, item.id, k=12, annotator=annotator)
    if near.empty:
        st.caption(index.problem or "This item has no cached features yet.")
    else:
        ids = near["item_id"].tolist()
        item_grid(store, ids, captions={i: f"{s:.2f}" + (f" · you: {m}" if m else "")
                                        for i, s, m in zip(ids, near["similarity"], near["mine"])})
        c1, c2, c3 = st.columns([3, 1, 1])
        pick = c1.multiselect("Items to label", ids, default=[i for i, m in zip(ids, near["mine"]) if m is None],
                              key=f"near-pick-{item.id}")
        as_label = c2.selectbox("as", labels, key="near-label")
        bulk = can(store, "bulk_label")
        c3.button(f"Label {len(pick)} similar", key="near-go", on_click=label_near, args=(pick, as_label),
                  disabled=not pick or not bulk, type="primary",
                  help=None if bulk else "labelling many items in one action needs the reviewer role")
