"""Schemathesis hooks for the API fuzz run (Scripts/api-fuzz.sh)."""
import json
import os
import threading

import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.specs.openapi.checks import negative_data_rejection as _negative_data_rejection

_log_lock = threading.Lock()

# Fields Cloud Hypervisor v53.0's decoder requires (plain `String`/`u64` fields of
# vmm/src/api/mod.rs, no serde default) although its document, and so ours, leaves them
# optional. A 400 saying one of them is required is Cloud Hypervisor's own answer.
REQUIRED_BY_DECODER = {
    "VmRemoveDevice": {"id"},
    "VmResizeDisk": {"id", "desired_size"},
    "VmResizeZone": {"id", "desired_ram"},
    "VmSnapshotConfig": {"destination_url"},
    "VmCoredumpData": {"destination_url"},
}

# The same inside a body, by the field's path there: CpuTopology's four u16 counts have no serde
# default either (Cloud Hypervisor's document again marks none required).
REQUIRED_BY_DECODER_AT = {
    "cpus.topology": {"threads_per_core", "cores_per_die", "dies_per_package", "packages"},
}


# The other way round: fields Cloud Hypervisor's document (and so ours) requires though its decoder
# gives them a serde default, FsConfig's num_queues (1) and queue_size (1024), both with that
# `default:` in the document too. Like Cloud Hypervisor, this VMM takes a body without them, so a
# negative case whose only faults are their absence is no finding. By operation, the JSON
# pointers (into the body's schema) of those fields.
DEFAULTED_BY_DECODER = {
    "PUT /vm.add-fs": {"/properties/num_queues", "/properties/queue_size"},
    "PUT /vm.create": {"/properties/fs/items/properties/num_queues", "/properties/fs/items/properties/queue_size"},
}


def _only_defaulted_fields_missing(case):
    """Whether every mutation of a negative case removed a field of DEFAULTED_BY_DECODER."""
    pointers = DEFAULTED_BY_DECODER.get(case.operation.label)
    mutations = getattr(case.meta.phase.data, "mutations", ()) if case.meta is not None else ()
    return bool(pointers and mutations) and all(
        tuple(mutation.keywords) == ("required",) and any(str(mutation.schema_pointer).endswith(p) for p in pointers)
        for mutation in mutations)


def _required_by_decoder(text):
    return any(f"{schema}: field '{field}' is required" in text or f"{schema}: field '{field}': required field is missing" in text
               for schema, fields in REQUIRED_BY_DECODER.items() for field in fields) or \
        any(f"field '{path}.{field}': required field is missing" in text
            for path, fields in REQUIRED_BY_DECODER_AT.items() for field in fields)


def _messages(response):
    """The error body's sentences (the server answers every refusal with a JSON list of them)."""
    try:
        body = json.loads(response.text)
    except ValueError:
        return []
    return [str(item) for item in body] if isinstance(body, list) else []


def _record(kind, response, case):
    """Appends one refusal of a schema-valid request to $API_FUZZ_REFUSALS (JSON lines), which
    api-fuzz.sh sums up after the run."""
    path = os.environ.get("API_FUZZ_REFUSALS")
    if not path:
        return
    entry = {
        "kind": kind,
        "operation": case.operation.label,
        "status": response.status_code,
        "messages": _messages(response),
        "body": json.dumps(case.body, sort_keys=True)[:400] if case.body is not None else None,
    }
    with _log_lock, open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


@schemathesis.check
def no_server_error_but_unsupported(ctx, response, case):
    """Any 5xx fails, except the deliberate 500 of an endpoint this VMM does not support yet
    (the server runs over a permissive fake control, so no state makes an action fail)."""
    if response.status_code >= 500 and "is not supported by this VMM yet" not in response.text:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


@schemathesis.check
def negative_data_rejection_or_defaulted(ctx, response, case):
    """Schemathesis's negative_data_rejection, except for a body whose only faults are missing
    fields of DEFAULTED_BY_DECODER (accepted with their defaults, as Cloud Hypervisor does)."""
    try:
        return _negative_data_rejection(ctx, response, case)
    except AcceptedNegativeData:
        if _only_defaulted_fields_missing(case):
            return None
        raise


@schemathesis.check
def positive_data_acceptance_or_explained(ctx, response, case):
    """Schemathesis's positive_data_acceptance, told what this VMM may answer to a request that
    fits the document. The built-in check only takes a list of statuses; this one reads the error
    body too. A schema-valid request must get a 2xx, or one of these refusals:

    - 400 whose sentences say "absent feature": the body asks for a feature this VMM lacks;
    - 404 "no VM is created", or 500 "... is not allowed while the VM is ..." / "already
      created": the fake control's state forbids the action;
    - 500 "... is not supported by this VMM yet": the whole action is absent;
    - 400 "<Schema>: field '<name>' is required" for a field of REQUIRED_BY_DECODER, or
      "field '<path>.<name>': required field is missing" for one of REQUIRED_BY_DECODER_AT;
    - 400 "invalid configuration: ...": the body decodes but breaks a rule the document cannot
      state (boot_vcpus above max_vcpus, a rate_limit_group naming no group, no kernel in the
      payload...). Cloud Hypervisor itself stores such a VmConfig at vm.create and refuses it at
      vm.boot; this VMM refuses it at once. These are counted for the run's summary and fail only
      when API_FUZZ_STRICT=1.

    Anything else fails: above all a 400 from decoding, which means the decoder and the document
    disagree about a field's name, type, range, enum or presence.
    """
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status, text = response.status_code, response.text
    if 200 <= status < 300:
        return None
    if status == 400 and "absent feature" in text:
        _record("absent feature", response, case)
        return None
    if status == 404 and "no VM is created" in text:
        return None
    if status == 500 and ("is not allowed while the VM is" in text or "already created" in text):
        _record("state", response, case)
        return None
    if status == 500 and "is not supported by this VMM yet" in text:
        return None
    if status == 400 and _required_by_decoder(text):
        _record("required", response, case)
        return None
    if status == 400 and "invalid configuration" in text:
        _record("validation", response, case)
        if os.environ.get("API_FUZZ_STRICT") == "1":
            raise AssertionError(f"a schema-valid body failed validation (API_FUZZ_STRICT=1): {text[:400]}")
        return None
    _record("refused", response, case)
    raise AssertionError(
        f"a request that fits the document was refused with {status}: {text[:400]}\n"
        "(acceptable refusals: 400 naming an absent feature or an invalid configuration, 404 no VM, "
        "500 state refusal or unsupported action)"
    )
