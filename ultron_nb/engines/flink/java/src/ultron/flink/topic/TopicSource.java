package ultron.flink.topic;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.connector.source.Boundedness;
import org.apache.flink.api.connector.source.Source;
import org.apache.flink.api.connector.source.SourceReader;
import org.apache.flink.api.connector.source.SourceReaderContext;
import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.java.typeutils.ResultTypeQueryable;
import org.apache.flink.core.io.SimpleVersionedSerializer;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.util.UserCodeClassLoader;

import java.io.IOException;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

/**
 * A FLIP-27 source over the partitions of a local topic (or of a Flink node's output): one
 * split per partition, read strictly in order, its position (file, byte offset) checkpointed.
 * Live ({@link Boundedness#CONTINUOUS_UNBOUNDED}): a reader at the end of a partition waits
 * for its next file. Bounded: each partition is read up to the last file it had when the job
 * started, then the source finishes.
 */
public final class TopicSource<T>
        implements Source<T, TopicSplit, TopicEnumeratorState>, ResultTypeQueryable<T> {
    private static final long serialVersionUID = 1L;

    private final String root;
    private final TopicLayout layout;
    private final int partitions;
    private final boolean bounded;
    private final long pollMillis;
    private final DeserializationSchema<T> format;

    public TopicSource(
            String root,
            TopicLayout layout,
            int partitions,
            boolean bounded,
            long pollMillis,
            DeserializationSchema<T> format) {
        this.root = root;
        this.layout = layout;
        this.partitions = partitions;
        this.bounded = bounded;
        this.pollMillis = pollMillis;
        this.format = format;
    }

    public int partitions() {
        return partitions;
    }

    @Override
    public Boundedness getBoundedness() {
        return bounded ? Boundedness.BOUNDED : Boundedness.CONTINUOUS_UNBOUNDED;
    }

    @Override
    public SourceReader<T, TopicSplit> createReader(SourceReaderContext context)
            throws Exception {
        format.open(
                new DeserializationSchema.InitializationContext() {
                    @Override
                    public MetricGroup getMetricGroup() {
                        return context.metricGroup().addGroup("deserializer");
                    }

                    @Override
                    public UserCodeClassLoader getUserCodeClassLoader() {
                        return context.getUserCodeClassLoader();
                    }
                });
        return new TopicSourceReader<>(
                () -> new TopicSplitReader(pollMillis),
                new TopicRecordEmitter<>(format),
                context);
    }

    @Override
    public SplitEnumerator<TopicSplit, TopicEnumeratorState> createEnumerator(
            SplitEnumeratorContext<TopicSplit> context) throws IOException {
        return new TopicEnumerator(context, initialSplits(), bounded);
    }

    @Override
    public SplitEnumerator<TopicSplit, TopicEnumeratorState> restoreEnumerator(
            SplitEnumeratorContext<TopicSplit> context, TopicEnumeratorState state) {
        return new TopicEnumerator(context, state.unassigned, bounded);
    }

    /** Every partition from its start; bounded, each ends at the last file it has now. */
    List<TopicSplit> initialSplits() throws IOException {
        Path base = Paths.get(root).toAbsolutePath();
        List<TopicSplit> splits = new ArrayList<>(partitions);
        for (int k = 0; k < partitions; k++) {
            Path dir = layout.partitionDir(base, k);
            String end = null;
            if (bounded) {
                List<TopicLayout.FileKey> files = layout.list(dir, k);
                end = files.isEmpty() ? null : files.get(files.size() - 1).name;
            }
            splits.add(
                    new TopicSplit(layout.splitId(k), dir.toString(), layout, k, null, 0,
                            bounded, end));
        }
        return splits;
    }

    @Override
    public SimpleVersionedSerializer<TopicSplit> getSplitSerializer() {
        return TopicSplitSerializer.INSTANCE;
    }

    @Override
    public SimpleVersionedSerializer<TopicEnumeratorState> getEnumeratorCheckpointSerializer() {
        return TopicEnumeratorState.Serializer.INSTANCE;
    }

    @Override
    public TypeInformation<T> getProducedType() {
        return format.getProducedType();
    }
}
