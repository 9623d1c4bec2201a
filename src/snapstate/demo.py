"""``make demo``: a LangGraph chat graph on snapstate's SqliteSaver, killed and resumed.

1. A child process runs a chat graph (a scripted user, a deterministic stand-in for a model)
   on ``snapstate.langgraph.SqliteSaver`` and is SIGKILLed in the middle of a model turn.
2. This process opens the same file, shows where the thread stopped, and resumes it: the
   turns that had completed are not run again.
3. It prints the thread's history (``get_state_history``).
4. It runs the same graph with no checkpointer, with snapstate's SqliteSaver and with
   langgraph-checkpoint-sqlite's SqliteSaver, and prints the checkpoint overhead per step.

    python -m snapstate.demo [--dir DIR] [--turns N] [--kill-at TURN]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

_WORDS = (
    "checkpoint state graph thread resume durable step node message history fork replay "
    "sqlite write commit value channel version snapshot turn answer question tool result"
).split()

_QUESTIONS = [
    "How do I resume a graph after a crash?",
    "What does a checkpoint hold?",
    "Can I fork a thread from an older step?",
    "How big does the history grow?",
    "What happens to pending writes?",
    "Is the SQLite file safe to copy?",
    "How do I list a thread's history?",
    "What is a namespace?",
    "How do I delete old threads?",
    "Which saver should I use in production?",
    "How do interrupts work?",
    "Can two processes share one file?",
]


def _reply(question: str, turn: int, size: int = 800) -> str:
    """A deterministic stand-in for a model: the same text for the same question and turn."""
    rng = random.Random(f"{turn}:{question}")
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(_WORDS))
    return f"(turn {turn}) " + " ".join(words)


def build_graph(
    turns: int, *, on_node: Callable[[str, int], None] | None = None, reply_size: int = 800
) -> Any:
    """``user`` and ``assistant`` take turns until the conversation has ``turns`` turns."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import END, START, MessagesState, StateGraph

    def user(state: MessagesState) -> dict[str, Any]:
        turn = len(state["messages"]) // 2 + 1
        if on_node is not None:
            on_node("user", turn)
        question = _QUESTIONS[(turn - 1) % len(_QUESTIONS)]
        return {"messages": [HumanMessage(question, id=f"user-{turn}")]}

    def assistant(state: MessagesState) -> dict[str, Any]:
        turn = (len(state["messages"]) + 1) // 2
        if on_node is not None:
            on_node("assistant", turn)
        text = _reply(str(state["messages"][-1].content), turn, reply_size)
        return {"messages": [AIMessage(text, id=f"assistant-{turn}")]}

    b = StateGraph(MessagesState)
    b.add_node("user", user)
    b.add_node("assistant", assistant)
    b.add_edge(START, "user")
    b.add_edge("user", "assistant")
    b.add_conditional_edges(
        "assistant", lambda s: END if len(s["messages"]) >= 2 * turns else "user"
    )
    return b


def _config(thread: str, turns: int) -> dict[str, Any]:
    """A run's config: its thread, and room for all of its steps (two a turn), whatever default
    limit the installed LangGraph sets."""
    return {"configurable": {"thread_id": thread}, "recursion_limit": 2 * turns + 10}


# -- the child process ---------------------------------------------------------------------------


def _child(db: str, thread: str, turns: int, kill_at: int, marker: str) -> None:
    from snapstate.langgraph import SqliteSaver

    def on_node(node: str, turn: int) -> None:
        print(f"    child  | turn {turn:2d} | {node:9s} runs", flush=True)
        if node == "assistant" and turn == kill_at:
            Path(marker).touch()
            time.sleep(60)  # the parent kills us here, mid-turn

    with SqliteSaver.from_conn_string(db) as saver:
        graph = build_graph(turns, on_node=on_node).compile(checkpointer=saver)
        # durability="sync": each step's checkpoint commits before the next step starts, so the
        # kill always lands right after the last finished step. (LangGraph's default, "async",
        # saves in the background and may lose the steps still in flight when a process dies.)
        graph.invoke({"messages": []}, _config(thread, turns), durability="sync")


# -- the steps of the demo -----------------------------------------------------------------------


def _say(text: str = "") -> None:
    print(text, flush=True)


def _run_and_kill(db: str, thread: str, turns: int, kill_at: int, work: Path) -> None:
    marker = work / "reached-kill-point"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snapstate.demo",
            "--child",
            db,
            thread,
            str(turns),
            str(kill_at),
            str(marker),
        ],
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the child process exited early (code {proc.returncode})")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the child process never reached the kill point")
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _say(f"    parent | SIGKILL sent to pid {proc.pid} during turn {kill_at}'s assistant step")


def _resume(db: str, thread: str, turns: int, kill_at: int) -> None:
    from snapstate.langgraph import SqliteSaver

    ran: list[tuple[str, int]] = []

    def on_node(node: str, turn: int) -> None:
        ran.append((node, turn))
        print(f"    parent | turn {turn:2d} | {node:9s} runs", flush=True)

    cfg = _config(thread, turns)
    with SqliteSaver.from_conn_string(db) as saver:
        graph = build_graph(turns, on_node=on_node).compile(checkpointer=saver)
        state = graph.get_state(cfg)
        n = len(state.values.get("messages", []))
        _say(
            f"    parent | last checkpoint: step {state.metadata['step']}, {n} messages, "
            f"next node: {', '.join(state.next) or '-'}"
        )
        graph.invoke(None, cfg)
        final = graph.get_state(cfg)
        _say(f"    parent | finished: {len(final.values['messages'])} messages")
        _check_resume(ran, final.values["messages"], turns, kill_at)
        _say()
        _say("3. The thread's history (get_state_history), newest first")
        _say()
        _say(f"    {'step':>4}  {'source':6}  {'next':9}  {'msgs':>4}  checkpoint id")
        for snap in graph.get_state_history(cfg):
            nxt = ",".join(snap.next) or "-"
            cid = snap.config["configurable"]["checkpoint_id"]
            _say(
                f"    {snap.metadata['step']:>4}  {snap.metadata['source']:6}  {nxt:9}  "
                f"{len(snap.values.get('messages', [])):>4}  {cid}"
            )


def _check_resume(
    ran: list[tuple[str, int]], messages: list[Any], turns: int, kill_at: int
) -> None:
    """Fail the demo unless the resumed run started at the step the kill interrupted and ended
    with the messages of a run that was never killed."""
    if ran[:1] != [("assistant", kill_at)]:
        raise SystemExit(
            f"the resumed run started with {ran[:1]}, not turn {kill_at}'s assistant step"
        )
    _say("    parent | steps that had finished before the kill did not run again")
    run = build_graph(turns).compile().invoke({"messages": []}, _config("uninterrupted", turns))
    if messages != run["messages"]:
        raise SystemExit("the resumed thread's messages differ from a run that was never killed")
    _say("    parent | the messages are those of a run that was never killed")


def _overhead(work: Path, turns: int, rounds: int) -> None:
    from snapstate.langgraph import SqliteSaver

    def ours(conn: sqlite3.Connection) -> Any:
        return SqliteSaver(conn)

    def ours_batched(conn: sqlite3.Connection) -> Any:
        return SqliteSaver(conn, durability="batched")

    makers: dict[str, Callable[[sqlite3.Connection], Any] | None] = {
        "no checkpointer": None,
        "snapstate SqliteSaver": ours,
        '  durability="batched"': ours_batched,
    }
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver as UpstreamSqliteSaver
    except ImportError:  # langgraph-checkpoint-sqlite is not installed: compare without it
        pass
    else:
        makers["langgraph SqliteSaver"] = UpstreamSqliteSaver
    builder = build_graph(turns)
    steps = 2 * turns
    times: dict[str, list[float]] = {name: [] for name in makers}
    for r in range(rounds + 1):  # round 0 warms up and is not counted
        for i, (name, make) in enumerate(makers.items()):
            conn = saver = None
            if make is not None:
                conn = sqlite3.connect(work / f"bench-{r}-{i}.db", check_same_thread=False)
                saver = make(conn)
                saver.setup()
            graph = builder.compile(checkpointer=saver)
            cfg: dict[str, Any] = {
                "configurable": {"thread_id": str(uuid.uuid4())},
                "recursion_limit": 10 * steps,
            }
            start = time.perf_counter()
            graph.invoke({"messages": []}, cfg)
            elapsed = time.perf_counter() - start
            if isinstance(saver, SqliteSaver):
                saver.close()
            if conn is not None:
                conn.close()
            if r:
                times[name].append(elapsed)
    per_step = {name: statistics.median(t) / steps * 1e3 for name, t in times.items()}
    base = per_step["no checkpointer"]
    _say(f"    {'':24} {'ms/step':>8} {'checkpoint overhead':>20}")
    for name, ms in per_step.items():
        extra = "" if name == "no checkpointer" else f"{ms - base:17.3f} ms"
        _say(f"    {name:24} {ms:8.3f} {extra:>20}")
    theirs = per_step.get("langgraph SqliteSaver")
    if theirs is not None:
        _say()
        for name in ("snapstate SqliteSaver", '  durability="batched"'):
            ours_ms = per_step[name] - base
            if ours_ms > 0:
                _say(
                    f"    {name.strip()}: checkpoint overhead {(theirs - base) / ours_ms:.1f}x "
                    "lower than LangGraph's SqliteSaver"
                )
    _say(
        f"    ({turns} turns = {steps} steps per thread, medians of {rounds} runs each; "
        "`make bench` measures this properly)"
    )


#: The file that marks a directory as the demo's own (the next run may empty it).
_MARK = ".snapstate-demo"


def _made_by_demo(work: Path, default: bool) -> bool:
    """Whether the directory ``work`` is empty or carries the demo's mark; for the default
    directory, also when it holds only what a run from before the mark left there (the
    conversation's SQLite files and the kill marker)."""
    names = [p.name for p in work.iterdir()]
    if not names or _MARK in names:
        return True
    return default and all(n.startswith("chat.db") or n == "reached-kill-point" for n in names)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        db, thread, turns, kill_at, marker = argv[1:6]
        _child(db, thread, int(turns), int(kill_at), marker)
        return
    parser = argparse.ArgumentParser(
        prog="python -m snapstate.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dir", help="where to keep the SQLite files (default: ./demo-data)")
    parser.add_argument("--turns", type=int, default=6, help="turns of the conversation")
    parser.add_argument("--kill-at", type=int, default=4, help="the turn to kill the child in")
    parser.add_argument("--bench-turns", type=int, default=25)
    parser.add_argument("--bench-rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not 1 <= args.kill_at <= args.turns:
        parser.error("--kill-at must be a turn between 1 and --turns")

    work = Path(args.dir or "demo-data").resolve()
    if work.exists():
        if not work.is_dir():
            parser.error(f"--dir {work} is a file, not a directory")
        if not _made_by_demo(work, default=args.dir is None):
            parser.error(
                f"--dir {work} holds files this demo did not make; it starts by emptying its "
                "directory, so give it a new or empty one"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / _MARK).touch()
    db = str(work / "chat.db")
    thread = "demo-thread"

    _say(f"snapstate demo: a LangGraph chat graph on snapstate.langgraph.SqliteSaver ({db})")
    _say()
    _say(f"1. A child process runs {args.turns} turns and is killed in turn {args.kill_at}")
    _say()
    _run_and_kill(db, thread, args.turns, args.kill_at, work)
    _say()
    _say("2. This process opens the same file and resumes the thread")
    _say()
    _resume(db, thread, args.turns, args.kill_at)
    _say()
    _say("4. Checkpoint overhead per step on the same graph")
    _say()
    with tempfile.TemporaryDirectory(dir=work) as bench:
        _overhead(Path(bench), args.bench_turns, args.bench_rounds)


if __name__ == "__main__":
    main()
