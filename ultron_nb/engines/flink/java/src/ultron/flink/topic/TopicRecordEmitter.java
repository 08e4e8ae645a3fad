package ultron.flink.topic;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.connector.source.SourceOutput;
import org.apache.flink.connector.base.source.reader.RecordEmitter;
import org.apache.flink.util.Collector;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * Decodes a line with the table's format into the split's own output (per-split
 * watermarks), then moves the split's position past the line.
 */
final class TopicRecordEmitter<T> implements RecordEmitter<TopicRecord, T, TopicSplitState> {
    private final DeserializationSchema<T> format;
    private final Forward<T> forward = new Forward<>();

    TopicRecordEmitter(DeserializationSchema<T> format) {
        this.format = format;
    }

    @Override
    public void emitRecord(TopicRecord record, SourceOutput<T> output, TopicSplitState state)
            throws Exception {
        forward.output = output;
        try {
            format.deserialize(record.line, forward);
        } catch (IOException e) {
            String text = new String(record.line, StandardCharsets.UTF_8);
            throw new IOException(
                    "cannot decode the line ending at byte " + record.offsetAfter + " of "
                            + record.file + ": " + (text.length() > 200 ? text.substring(0, 200)
                            + "..." : text),
                    e);
        }
        state.advance(record.file, record.offsetAfter);
    }

    private static final class Forward<T> implements Collector<T> {
        SourceOutput<T> output;

        @Override
        public void collect(T record) {
            output.collect(record);
        }

        @Override
        public void close() {}
    }
}
