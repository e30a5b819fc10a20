"""The OpenAI-compatible inference gateway (issue 6).

Serving nodes advertise models at registration and long-poll for requests; callers use
OpenAI's API with a QuackMesh API key. The pieces, one per module:

* ``keys`` — ``sk-qm-`` API keys bound to a wallet (sha256 stored only);
* ``directory`` — the in-memory list of online, staked nodes and the models they serve;
* ``broker`` — pending requests, idle long-polls, routing (price, latency, reputation);
* ``dispatch`` — runs one request over attempts on successive nodes (failover, and the
  greedy-prefix continuation of a stream that broke);
* ``metering`` / ``billing`` — token bounds and prices; reservation in
  ``escrow:infer:<id>``, settlement, refunds;
* ``runner`` — one request from reservation to settlement; ``sse`` — streamed answers;
* ``verify`` — re-runs a sample of answers on other nodes and slashes the minority;
* ``gateway`` / ``router`` — HTTP: the OpenAI routes (``openai_schemas``, ``errors``:
  OpenAI's shapes), and the node and key endpoints;
* ``state`` — what one coordinator keeps in memory for all of this.

Nothing is imported here: ``runtime`` imports ``inference.state``, and the routers import
``runtime``.
"""
