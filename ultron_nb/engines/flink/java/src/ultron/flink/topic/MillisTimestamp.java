package ultron.flink.topic;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;

/**
 * {@code ultron_ms_timestamp(ms)}: milliseconds since the epoch as a {@code TIMESTAMP(3)}
 * wall clock in UTC, the inverse of {@link WatermarkMillis} whatever the session's time zone
 * (a reader's watermark from its producer's {@code __wm}). Null stays null.
 */
public final class MillisTimestamp extends ScalarFunction {
    public @DataTypeHint("TIMESTAMP(3)") LocalDateTime eval(Long ms) {
        return ms == null ? null : LocalDateTime.ofInstant(Instant.ofEpochMilli(ms), ZoneOffset.UTC);
    }
}
