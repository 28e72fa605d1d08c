"""EddyDB's Python function worker.

The server runs this program as `python3 -u -c <this source>`, one process
per concurrently running batch, so that user code can neither crash nor
block the server: a hung process is killed, a dead one replaced.

Protocol on stdin/stdout: frames of a 4-byte big-endian length followed by
UTF-8 JSON. The first frame is the setup (kind "scalar" or "aggregate",
scalar when absent; name, body, argument and result wire types, per-call
timeout, address-space limit), answered with {"ok": true} (an aggregate's
adds "retract": whether the body defines one) or {"error", "traceback"}.

Every later frame of a scalar function is a batch
{"columns": [[value per row] per argument], "n": rows}, answered with
{"results": [value per row], "errors": [[row, message, traceback], ...]}.

Every later frame of an aggregate is a batch of groups, with the same
columns and each group's state so far (pickled, base64; null for a new
group) and its rows as (row, weight) pairs, flattened (an array of numbers
decodes several times faster than an array of pairs):
{"columns": ..., "n": rows, "groups": [{"state": s, "rows": [i, w, i, w, ...]}, ...]},
answered with {"groups": [{"state": s, "value": finish(state)}, ...],
"errors": [[group, message, traceback], ...]}. A weight w > 0 calls
accumulate(state, *args) w times, w < 0 calls retract |w| times; a call
that returns something other than None returns the new state. The worker
keeps no state between batches: the server keeps the pickled states.

Either kind of batch may be preceded by {"progress": n} frames whenever it
takes long, so the server can tell a slow batch from a hung process.

User code sees one call per row; an exception, a wrong result type or a
timeout affects only its own row (of an aggregate: that row of its group,
or the group's finish). The wire forms of each type are listed in
`python.rs` (`WireType`) and converted here once per column.
"""

import binascii
import datetime
import decimal
import itertools
import json
import linecache
import math
import operator
import os
import pickle
import resource
import signal
import struct
import sys
import textwrap
import time
import traceback
import types

# A progress frame is sent when a batch has sent nothing for this long.
PROGRESS_INTERVAL_S = 0.5

# The timer is armed for the time limit plus this share of it (at most
# TIMER_SLACK_MAX_S) and re-armed only before a call that starts more than
# that slack after the last arming: each call still gets its whole limit,
# and a fast function costs no system call per call.
TIMER_SLACK_SHARE = 0.05
TIMER_SLACK_MAX_S = 0.05

# Characters of a row's arguments quoted in an aggregate's error message.
MAX_QUOTED_ARGUMENTS = 200

INT_MIN = -(1 << 63)
INT_MAX = (1 << 63) - 1

EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
EPOCH = datetime.datetime(1970, 1, 1)
EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
ONE_MICROSECOND = datetime.timedelta(microseconds=1)

# Frames running with these globals are the worker's own, not user code.
WORKER_GLOBALS = globals()


class CallTimeout(BaseException):
    """A call ran past its time limit. A BaseException, so that user code's
    `except Exception:` does not swallow it."""


class WrongType(Exception):
    """A returned value does not fit the declared result type."""


class Definition(Exception):
    """The body does not define a usable function."""

    def __init__(self, message, trace):
        super().__init__(message)
        self.trace = trace


# ---------------------------------------------------------------- frames


def take_stdio():
    """Keeps the protocol on private copies of fds 0 and 1 (not inheritable,
    so child processes do not get them) and points fd 1 and sys.stdout at
    stderr, fd 0 and sys.stdin at /dev/null: `print()` or `input()` in user
    code (or in a library it calls, or a child process it starts) can
    neither corrupt nor swallow frames. Returns (frames in, frames out)."""
    private_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    private_in = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull, "r")
    return os.fdopen(private_in, "rb"), os.fdopen(private_out, "wb")


def read_frame(source):
    """The next frame's JSON value, or None at end of input."""
    header = source.read(4)
    if len(header) < 4:
        return None
    (length,) = struct.unpack(">I", header)
    body = source.read(length)
    if len(body) < length:
        return None
    return json.loads(body)


def write_frame(sink, data):
    """Writes an already encoded frame body. The buffered writer retries
    short writes, which a signal can cause on a pipe."""
    sink.write(struct.pack(">I", len(data)))
    sink.write(data)
    sink.flush()


def encode(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# ---------------------------------------------------------------- tracebacks


def user_traceback(error):
    """The traceback of an exception from user code, without the worker's
    own frames (the row loop and the alarm handler)."""
    try:
        tb = error.__traceback__
        frames = traceback.TracebackException(type(error), error, tb)
        frames.stack = traceback.StackSummary.from_list(
            [f for f in frames.stack if f.filename != "<string>"]
        )
        return "".join(frames.format())
    except Exception:  # a traceback must never cost the row loop
        return "".join(traceback.format_exception_only(type(error), error))


def one_line(error):
    text = str(error).strip().splitlines()
    name = type(error).__name__
    return f"{name}: {text[0]}" if text else name


# ---------------------------------------------------------------- wire -> Python


def decode_list(element):
    """A JSON array is already a list; only its elements may need work."""
    if element is None:
        return None
    return lambda v: [None if x is None else element(x) for x in v]


DECODERS = {
    "bool": None,
    "int": None,
    "float": float,  # also reads the strings "NaN", "Infinity", "-Infinity"
    "decimal": decimal.Decimal,
    "text": None,
    "bytea": bytes.fromhex,
    "date": lambda v: datetime.date.fromordinal(v + EPOCH_ORDINAL),
    "timestamp": lambda v: EPOCH + datetime.timedelta(microseconds=v),
    "timestamptz": lambda v: EPOCH_UTC + datetime.timedelta(microseconds=v),
    "json": None,
}


def decoder(wire):
    """Wire value -> Python value for a non-null value, or None when the
    JSON value is already the Python value."""
    if wire.startswith("list:"):
        return decode_list(decoder(wire[5:]))
    if wire not in DECODERS:
        raise ValueError(f"unknown wire type {wire!r}")
    return DECODERS[wire]


def decode_column(decode, values, argno, bad):
    """Converts one argument column; a value Python cannot represent (a
    date beyond year 9999) marks its row bad instead of failing the batch."""
    if decode is None:
        return values
    try:
        return [None if v is None else decode(v) for v in values]
    except Exception:
        pass
    out = []
    for row, v in enumerate(values):
        try:
            out.append(None if v is None else decode(v))
        except Exception as e:
            out.append(None)
            bad.setdefault(row, f"argument {argno} cannot be given to Python: {one_line(e)}")
    return out


# ---------------------------------------------------------------- Python -> wire


def wrong(expected, value, detail=""):
    return WrongType(
        f"wrong return type: expected {expected}, got {type(value).__name__}{detail}"
    )


def encode_bool(v):
    if v.__class__ is bool:
        return v
    raise wrong("bool", v)


def encode_int(v):
    kind = v.__class__
    if kind is not int:
        if kind is bool or isinstance(v, bool):
            raise wrong("int", v)
        if isinstance(v, float):
            if not v.is_integer():
                raise wrong("int", v, f" {v!r} with a fractional part")
            v = int(v)
        else:
            try:
                v = operator.index(v)
            except TypeError:
                raise wrong("int", v) from None
    if INT_MIN <= v <= INT_MAX:
        return v
    raise WrongType(f"value {v} out of range for bigint")


def encode_float(v):
    kind = v.__class__
    if kind is not float:
        if kind is bool or isinstance(v, bool):
            raise wrong("float", v)
        if not isinstance(v, (int, float, decimal.Decimal)):
            raise wrong("float", v)
        try:
            v = float(v)
        except OverflowError:
            raise WrongType(f"value {v} out of range for double precision") from None
    if v - v == 0.0:  # finite
        return v
    if v != v:
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def encode_decimal(v):
    if isinstance(v, bool):
        raise wrong("decimal", v)
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        v = decimal.Decimal(repr(v))
    if not isinstance(v, decimal.Decimal):
        raise wrong("decimal", v)
    if not v.is_finite():
        raise WrongType(f"numeric value {v} is not finite")
    return format(v, "f")


def encode_text(v):
    if v.__class__ is str or isinstance(v, str):
        return v
    raise wrong("text", v)


def encode_bytea(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    raise wrong("bytea", v)


def encode_date(v):
    if isinstance(v, datetime.date) and not isinstance(v, datetime.datetime):
        return v.toordinal() - EPOCH_ORDINAL
    raise wrong("date", v)


def encode_timestamp(v):
    """Naive timestamps as they are; an aware one is taken to UTC."""
    if not isinstance(v, datetime.datetime):
        raise wrong("timestamp", v)
    if v.tzinfo is not None and v.utcoffset() is not None:
        return (v - EPOCH_UTC) // ONE_MICROSECOND
    return (v - EPOCH) // ONE_MICROSECOND


def encode_timestamptz(v):
    """A naive datetime is taken to be in UTC."""
    if not isinstance(v, datetime.datetime):
        raise wrong("timestamptz", v)
    if v.tzinfo is not None and v.utcoffset() is not None:
        return (v - EPOCH_UTC) // ONE_MICROSECOND
    return (v - EPOCH) // ONE_MICROSECOND


def encode_json(v):
    try:
        json.dumps(v, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise WrongType(f"wrong return type: expected json, {e}") from None
    return v


def encode_list(wire, element):
    def encode_one(v):
        if not isinstance(v, (list, tuple)):
            raise wrong(wire, v)
        out = []
        for k, x in enumerate(v):
            try:
                out.append(None if x is None else element(x))
            except WrongType as e:
                raise WrongType(f"list element {k}: {e}") from None
        return out

    return encode_one


ENCODERS = {
    "bool": encode_bool,
    "int": encode_int,
    "float": encode_float,
    "decimal": encode_decimal,
    "text": encode_text,
    "bytea": encode_bytea,
    "date": encode_date,
    "timestamp": encode_timestamp,
    "timestamptz": encode_timestamptz,
    "json": encode_json,
}


def encoder(wire):
    """Python value -> wire value for a non-null result; raises WrongType."""
    if wire.startswith("list:"):
        return encode_list(wire, encoder(wire[5:]))
    if wire not in ENCODERS:
        raise ValueError(f"unknown wire type {wire!r}")
    return ENCODERS[wire]


# ---------------------------------------------------------------- setup


def apply_memory_limit(limit):
    """Caps the address space before user code runs; a limit above the hard
    limit this process inherited is lowered to it."""
    if limit is None:
        return
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError) as e:
        raise Definition(f"cannot set the memory limit to {limit} bytes: {e}", "") from None


def run_body(kind, name, body):
    """Runs the body as a module of its own and returns its namespace. The
    module is registered in sys.modules so that pickle finds the classes
    and functions the body defines (an aggregate's state may hold them)."""
    filename = f"<{'aggregate' if kind == 'aggregate' else 'function'} {name}>"
    # A body written indented inside $$ … $$ (as in PL/Python) is read as
    # if it started at the margin.
    body = textwrap.dedent(body.strip("\n"))
    # Lets tracebacks show the lines of the body.
    linecache.cache[filename] = (len(body), None, body.splitlines(True), filename)
    # A dotted name would send pickle looking for a package.
    label = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    module = types.ModuleType(f"eddydb_function_{label}")
    module.__builtins__ = __builtins__
    sys.modules[module.__name__] = module
    try:
        code = compile(body, filename, "exec")
        exec(code, module.__dict__)
    except BaseException as e:  # a SystemExit in the body is a definition error too
        raise Definition(one_line(e), user_traceback(e)) from None
    return module.__dict__


def named_function(namespace, name, hint=""):
    """The function of that name the body defined; raises Definition."""
    function = namespace.get(name)
    if function is None:
        raise Definition(f"the body does not define a function named {name}{hint}", "")
    if not callable(function):
        raise Definition(
            f"{name} in the body is a {type(function).__name__}, not a function", ""
        )
    return function


def aggregate_functions(namespace):
    """(create_state, accumulate, retract or None, finish) of an aggregate's body."""
    hint = " (an aggregate defines create_state, accumulate and finish, and may define retract)"
    create_state, accumulate, finish = (
        named_function(namespace, name, hint)
        for name in ("create_state", "accumulate", "finish")
    )
    retract = None
    if namespace.get("retract") is not None:
        retract = named_function(namespace, "retract")
    return create_state, accumulate, retract, finish


def on_alarm(signum, frame):
    """Interrupts user code only: an alarm that lands in the worker's own
    code (the call just returned) is ignored, so it cannot break the loop."""
    if frame is not None and frame.f_globals is WORKER_GLOBALS:
        return
    raise CallTimeout("the call ran past its time limit")


# ---------------------------------------------------------------- batches


class Calls:
    """What batches of either kind share: the argument decoders, the result
    encoder, the per-call time limit and progress frames."""

    def __init__(self, setup, sink):
        self.sink = sink
        self.decoders = [decoder(w) for w in setup["args"]]
        self.encode_result = encoder(setup["returns"])
        timeout = setup.get("timeout") or 0.0
        self.timeout = float(timeout) if timeout > 0 else 0.0
        self.slack = min(self.timeout * TIMER_SLACK_SHARE, TIMER_SLACK_MAX_S)
        self.timer = self.timeout + self.slack
        if self.timeout:
            signal.signal(signal.SIGALRM, on_alarm)
        self.last_sent = 0.0
        self.armed_at = -math.inf

    def decode_columns(self, request):
        """(number of rows, argument columns as Python values, {row: why
        its arguments cannot be given to Python})."""
        n = request["n"]
        columns = request["columns"]
        if len(columns) != len(self.decoders) or any(len(c) != n for c in columns):
            raise ValueError(
                f"batch has {len(columns)} columns for {len(self.decoders)} arguments, "
                f"or a column without {n} rows"
            )
        bad = {}
        columns = [
            decode_column(d, c, argno + 1, bad)
            for argno, (d, c) in enumerate(zip(self.decoders, columns))
        ]
        return n, columns, bad

    def progress(self, done):
        # Formatted without the json module, whose Python code an alarm
        # meant for user code could interrupt.
        write_frame(self.sink, b'{"progress":%d}' % done)
        self.last_sent = time.monotonic()

    def before_call(self, done):
        """Sends progress if the batch has been silent for long, and makes
        sure the timer leaves the coming call its whole limit. The hot loops
        do the same inline."""
        now = time.monotonic()
        if now - self.last_sent > PROGRESS_INTERVAL_S:
            self.progress(done)
            now = time.monotonic()
        if self.timeout and now - self.armed_at > self.slack:
            signal.setitimer(signal.ITIMER_REAL, self.timer, self.timer)
            self.armed_at = now

    def rearm(self):
        """Called before the worker handles a failed call (formats its
        traceback, which runs library code): a whole limit for that, so
        that an alarm meant for the call cannot land in it."""
        if self.timeout:
            now = time.monotonic()  # taken first: the timer fires no earlier than now + timer
            signal.setitimer(signal.ITIMER_REAL, self.timer, self.timer)
            self.armed_at = now

    def disarm(self):
        if self.timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.armed_at = -math.inf


class Runner(Calls):
    """Runs batches of calls of one scalar function."""

    def __init__(self, function, setup, sink):
        super().__init__(setup, sink)
        self.function = function

    def run(self, request):
        """Answers one batch frame with its reply body (encoded)."""
        n, columns, bad = self.decode_columns(request)
        rows = zip(*columns) if columns else itertools.repeat((), n)
        pairs = enumerate(rows)
        results = [None] * n
        errors = [[row, message, ""] for row, message in sorted(bad.items())]
        if bad:
            pairs = [(row, args) for row, args in pairs if row not in bad]
        try:
            self.run_rows(pairs, results, errors)
        finally:
            self.disarm()
        return encode_reply(results, errors)

    def run_rows(self, pairs, results, errors):
        """The hot loop: one call per row, each under the time limit (see
        before_call; the timer is never disarmed between calls, and alarms
        that land in the worker's own code are ignored)."""
        function = self.function
        encode_result = self.encode_result
        limit = self.timeout
        slack, timer = self.slack, self.timer
        arm = signal.setitimer
        real = signal.ITIMER_REAL
        clock = time.monotonic
        self.last_sent = clock()
        for row, args in pairs:
            now = clock()
            if now - self.last_sent > PROGRESS_INTERVAL_S:
                self.progress(row)
                now = clock()
            if limit and now - self.armed_at > slack:
                arm(real, timer, timer)
                self.armed_at = now
            try:
                value = function(*args)
            except CallTimeout as e:
                self.rearm()
                errors.append([row, f"timed out after {limit:g} s", user_traceback(e)])
                continue
            except BaseException as e:
                self.rearm()
                errors.append([row, one_line(e), user_traceback(e)])
                continue
            if value is not None:
                try:
                    results[row] = encode_result(value)
                except WrongType as e:
                    errors.append([row, str(e), ""])
                except BaseException as e:  # from a user class's __index__, __float__, ...
                    self.rearm()
                    errors.append([row, one_line(e), user_traceback(e)])


class NoArguments:
    """The argument rows of an aggregate without arguments: all ()."""

    def __getitem__(self, row):
        return ()


# A group whose state could neither be unpickled nor made.
FAILED = object()


class Aggregator(Calls):
    """Runs batches of group updates of one aggregate. States come and go
    pickled (protocol 5) in base64; nothing is kept between batches."""

    def __init__(self, name, functions, setup, sink):
        super().__init__(setup, sink)
        self.name = name
        self.create_state, self.accumulate, self.retract, self.finish = functions
        self.retract_hint = None
        self.rows = self.wire_rows = self.bad = None

    def run(self, request):
        """Answers one batch frame with its reply body (encoded)."""
        _, columns, self.bad = self.decode_columns(request)
        self.rows = list(zip(*columns)) if columns else NoArguments()
        self.wire_rows = request["columns"]
        replies = []
        errors = []
        self.last_sent = time.monotonic()
        try:
            for index, group in enumerate(request["groups"]):
                state = self.load(index, group["state"], errors)
                if state is FAILED:
                    replies.append({"state": None, "value": None})
                    continue
                state = self.apply(index, state, group["rows"], errors)
                replies.append(self.store(index, state, errors))
        finally:
            self.disarm()
            self.rows = self.wire_rows = self.bad = None
        return encode_groups_reply(replies, errors)

    def load(self, index, text, errors):
        """The group's state: unpickled, or made by create_state()."""
        self.before_call(index)
        try:
            if text is None:
                return self.create_state()
            return pickle.loads(binascii.a2b_base64(text))
        except BaseException as e:
            self.rearm()
            what = "create_state" if text is None else "pickle.loads(state)"
            errors.append([index, self.failure(what, e), user_traceback(e)])
            return FAILED

    def apply(self, index, state, pairs, errors):
        """The hot loop: accumulate or retract per (row, weight), in order,
        each call under the time limit. A call that fails skips the rest of
        its row; what it did to the state before failing stays."""
        accumulate, retract = self.accumulate, self.retract
        rows, bad = self.rows, self.bad
        limit = self.timeout
        slack, timer = self.slack, self.timer
        arm = signal.setitimer
        real = signal.ITIMER_REAL
        clock = time.monotonic
        refused = False
        pairs = iter(pairs)
        for row, weight in zip(pairs, pairs):
            if weight > 0:
                function, times = accumulate, weight
            elif weight < 0 and retract is not None:
                function, times = retract, -weight
            else:
                if weight < 0 and not refused:
                    errors.append([index, self.cannot_retract(), ""])
                    refused = True
                continue
            if bad and row in bad:
                errors.append([index, self.row_failure(weight, row, bad[row]), ""])
                continue
            args = rows[row]
            while times:
                times -= 1
                now = clock()
                if now - self.last_sent > PROGRESS_INTERVAL_S:
                    self.progress(index)
                    now = clock()
                if limit and now - self.armed_at > slack:
                    arm(real, timer, timer)
                    self.armed_at = now
                try:
                    new = function(state, *args)
                except BaseException as e:
                    self.rearm()
                    why = self.why(e)
                    errors.append([index, self.row_failure(weight, row, why), user_traceback(e)])
                    break
                if new is not None:
                    state = new
        return state

    def store(self, index, state, errors):
        """The group's reply. The state is pickled before finish runs, so
        that whatever finish does to it is not kept."""
        self.before_call(index)
        try:
            pickled = pickle.dumps(state, protocol=5)
            text = binascii.b2a_base64(pickled, newline=False).decode("ascii")
        except BaseException as e:
            self.rearm()
            text = None
            errors.append([index, self.failure("pickle.dumps(state)", e), user_traceback(e)])
        self.before_call(index)
        try:
            value = self.finish(state)
            if value is not None:
                value = self.encode_result(value)
        except WrongType as e:
            value = None
            errors.append([index, f"finish: {e}", ""])
        except BaseException as e:  # also from a user class's __index__, __float__, ...
            self.rearm()
            value = None
            errors.append([index, self.failure("finish", e), user_traceback(e)])
        return {"state": text, "value": value}

    def why(self, error):
        if isinstance(error, CallTimeout):
            return f"timed out after {self.timeout:g} s"
        return one_line(error)

    def failure(self, what, error):
        return f"{what}: {self.why(error)}"

    def row_failure(self, weight, row, why):
        """Names the function and the row's arguments (as wire values)."""
        what = "accumulate" if weight > 0 else "retract"
        arguments = encode([column[row] for column in self.wire_rows]).decode("utf-8")
        if len(arguments) > MAX_QUOTED_ARGUMENTS:
            arguments = arguments[:MAX_QUOTED_ARGUMENTS] + "…"
        return f"{what} for arguments {arguments}: {why}"

    def cannot_retract(self):
        if self.retract_hint is None:
            self.rearm()
            import inspect

            try:
                names = inspect.signature(self.accumulate).parameters
                self.retract_hint = f"retract({', '.join(names)})"
            except (TypeError, ValueError):
                self.retract_hint = "retract(state, …)"
        return f"aggregate {self.name} cannot retract rows: define {self.retract_hint}"


def encode_reply(results, errors):
    """A scalar batch's reply body. A string Python holds but UTF-8 cannot
    (a lone surrogate) fails only its row, found on this slow path."""
    reply = {"results": results, "errors": errors}
    try:
        return encode(reply)
    except UnicodeEncodeError:
        pass
    for row, value in enumerate(results):
        try:
            encode(value)
        except UnicodeEncodeError:
            results[row] = None
            errors.append([row, "returned text is not valid UTF-8 (a lone surrogate)", ""])
    repair_texts(errors)
    return encode(reply)


def encode_groups_reply(replies, errors):
    """An aggregate batch's reply body; a value UTF-8 cannot hold fails its
    group's finish only, as in encode_reply."""
    reply = {"groups": replies, "errors": errors}
    try:
        return encode(reply)
    except UnicodeEncodeError:
        pass
    for index, group in enumerate(replies):
        try:
            encode(group["value"])
        except UnicodeEncodeError:
            group["value"] = None
            errors.append(
                [index, "finish: returned text is not valid UTF-8 (a lone surrogate)", ""]
            )
    repair_texts(errors)
    return encode(reply)


def repair_texts(errors):
    """Error messages and tracebacks may quote user text: lone surrogates
    become replacement characters."""
    for error in errors:
        for k in (1, 2):
            error[k] = error[k].encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------- main


def prepare(setup, sink):
    """Runs the body and checks it defines what its kind needs. Returns the
    batch runner and the setup reply; raises Definition."""
    kind = setup.get("kind") or "scalar"
    if kind not in ("scalar", "aggregate"):
        raise Definition(f"bug: unknown kind of definition {kind!r}", "")
    apply_memory_limit(setup.get("memory_limit"))
    namespace = run_body(kind, setup["name"], setup["body"])
    if kind == "aggregate":
        functions = aggregate_functions(namespace)
        runner = Aggregator(setup["name"], functions, setup, sink)
        return runner, {"ok": True, "retract": runner.retract is not None}
    function = named_function(namespace, setup["name"])
    return Runner(function, setup, sink), {"ok": True}


def serve():
    source, sink = take_stdio()
    # Ctrl-C at the server's terminal reaches its whole process group; the
    # server decides when workers end (it closes stdin or kills them).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup = read_frame(source)
    if setup is None:
        return
    try:
        runner, ready = prepare(setup, sink)
    except Definition as e:
        write_frame(sink, encode({"error": str(e), "traceback": e.trace}))
        return
    write_frame(sink, encode(ready))
    while True:
        request = read_frame(source)
        if request is None:
            return
        write_frame(sink, runner.run(request))


try:
    serve()
except BrokenPipeError:
    pass  # the server went away
