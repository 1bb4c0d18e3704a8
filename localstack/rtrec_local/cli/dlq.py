"""`rtrec dlq`: the events dead-letter queue: inspect it, send its records back to the stream."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from rtrec.errors import RtrecError
from rtrec.resources import EVENTS_STREAM
from rtrec.services.dead_letters import RedriveReport, RedriveStopped, SkippedLetter, redrive_dead_letters
from rtrec_local.cli.utils import EndpointOption, aws_adapters, aws_settings, exit_on_error, fail, say

app = typer.Typer(help="The events dead-letter queue: inspect it, send its records back to the stream.", no_args_is_help=True)


def dead_letter_line(body: dict[str, Any]) -> str:
    """One line per dead letter: which record, why, and where it lies when it went by reference."""
    from rtrec.adapters.aws.sqs import is_reference

    batch = body.get("KinesisBatchInfo")
    if isinstance(batch, dict):  # AWS's on-failure destination: batch metadata only, the records stay in the stream
        return (
            f"{batch.get('shardId', '?')}:{batch.get('startSequenceNumber', '?')}..{batch.get('endSequenceNumber', '?')}"
            f": {body.get('requestContext', {}).get('condition', 'failed batch')} (metadata only; "
            f"{batch.get('batchSize', '?')} record(s) to read from the stream)"
        )
    ident = body.get("event_id") or body.get("record", {}).get("eventID") or body.get("sequence_number") or "?"
    line = f"{ident}: {body.get('reason')} (attempts: {body.get('attempts', 1)}, from {body.get('source', '?')})"
    if is_reference(body):
        line += f" [by reference: s3://{body['s3_bucket']}/{body['s3_key']}, {int(body.get('size') or 0):,} bytes]"
    return line


@app.command("show")
def dlq_show(
    endpoint_url: EndpointOption = "http://localhost:4566", limit: Annotated[int, typer.Option(min=1, max=10)] = 10
) -> None:
    """Print dead-lettered records with the reason, and the S3 key and size of those kept by reference
    (they stay in the queue)."""
    with exit_on_error():
        dlq = aws_adapters(aws_settings(endpoint_url)).dead_letter_queue()
        messages = dlq.receive_with_handles(limit, visibility_timeout=0)
    for body, _ in messages:
        typer.echo(dead_letter_line(body))
    say(f"{len(messages)} message(s) shown")


@app.command("redrive")
def dlq_redrive(
    endpoint_url: EndpointOption = "http://localhost:4566",
    limit: Annotated[int, typer.Option(min=1, help="at most this many records")] = 1000,
) -> None:
    """Put dead-lettered records back on the events stream (after fixing what failed them); each message
    is deleted only once its record is on the stream again, and a by-reference letter's S3 object only after
    its message, so nothing is lost if this stops midway."""

    def said_skip(letter: SkippedLetter) -> None:
        if letter.error is None:
            say(f"skipping a message without a Kinesis record: {dead_letter_line(letter.body)[:200]}")
        else:
            say(f"skipping {dead_letter_line(letter.body)}: {letter.error}")

    try:
        settings = aws_settings(endpoint_url)
        aws = aws_adapters(settings)
        report = redrive_dead_letters(aws.dead_letter_queue(), aws.event_stream(), limit, on_skip=said_skip)
    except RedriveStopped as exc:
        raise fail(str(exc)) from None
    except RtrecError as exc:  # the queue or the stream could not be reached: nothing was sent yet
        raise fail(str(RedriveStopped(exc, RedriveReport()))) from None
    say(
        f"{report.moved} record(s) sent back to {settings.names.stream(EVENTS_STREAM)}"
        + (f"; {len(report.skipped)} message(s) left in the queue" if report.skipped else "")
    )
