package ultron.flink.topic;

import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.connector.base.source.reader.RecordEmitter;
import org.apache.flink.connector.base.source.reader.SingleThreadMultiplexSourceReaderBase;
import org.apache.flink.connector.base.source.reader.splitreader.SplitReader;

import java.util.Map;
import java.util.function.Supplier;

/** A source subtask: its partitions read by one fetcher thread, each with its own output. */
final class TopicSourceReader<T>
        extends SingleThreadMultiplexSourceReaderBase<
                TopicRecord, T, TopicSplit, TopicSplitState> {

    TopicSourceReader(
            Supplier<SplitReader<TopicRecord, TopicSplit>> splitReader,
            RecordEmitter<TopicRecord, T, TopicSplitState> emitter,
            SourceReaderContext context) {
        super(splitReader, emitter, context.getConfiguration(), context);
    }

    @Override
    protected void onSplitFinished(Map<String, TopicSplitState> finished) {}

    @Override
    protected TopicSplitState initializedState(TopicSplit split) {
        return new TopicSplitState(split);
    }

    @Override
    protected TopicSplit toSplitType(String splitId, TopicSplitState state) {
        return state.toSplit();
    }
}
