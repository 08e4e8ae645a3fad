package ultron.flink.topic;

import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.functions.ScalarFunction;

import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;

/**
 * {@code ultron_wm_ms(t)}: a watermark as milliseconds since the epoch, the form a node's
 * output carries it in (its hidden column {@code __wm}). A number costs the sink a fraction
 * of what writing a second timestamp string per row does.
 *
 * <p>A {@code TIMESTAMP} is read as a wall clock in UTC, whatever the session's time zone,
 * so that {@link MillisTimestamp} gives back the very same value; a {@code TIMESTAMP_LTZ} is
 * an instant already. Null stays null (no watermark yet).
 */
public final class WatermarkMillis extends ScalarFunction {
    public Long eval(@DataTypeHint("TIMESTAMP(3)") LocalDateTime t) {
        return t == null ? null : t.toInstant(ZoneOffset.UTC).toEpochMilli();
    }

    public Long eval(@DataTypeHint("TIMESTAMP_LTZ(3)") Instant t) {
        return t == null ? null : t.toEpochMilli();
    }
}
