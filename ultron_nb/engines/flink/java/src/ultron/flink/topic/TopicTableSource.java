package ultron.flink.topic;

import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.DataStreamSource;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.table.connector.ChangelogMode;
import org.apache.flink.table.connector.ProviderContext;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DataStreamScanProvider;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.connector.source.ScanTableSource;
import org.apache.flink.table.connector.source.abilities.SupportsWatermarkPushDown;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.types.DataType;

import javax.annotation.Nullable;

/**
 * The table side of {@link TopicSource}. The table's watermark is pushed into the source
 * ({@link SupportsWatermarkPushDown}), so each partition has its own watermark generator and
 * the source's watermark is the minimum over its partitions: a partition with nothing new
 * holds it back (no idleness), and its later rows are never late. The source runs with at
 * most one subtask per partition, so no subtask is left without a partition.
 */
final class TopicTableSource implements ScanTableSource, SupportsWatermarkPushDown {
    private static final String UID = "ultron-topic-source";

    private final DecodingFormat<DeserializationSchema<RowData>> format;
    private final DataType physicalType;
    private final String path;
    private final TopicLayout layout;
    private final int partitions;
    private final boolean bounded;
    private final long pollMillis;
    private final String table;
    @Nullable private WatermarkStrategy<RowData> watermarkStrategy;

    TopicTableSource(
            DecodingFormat<DeserializationSchema<RowData>> format,
            DataType physicalType,
            String path,
            TopicLayout layout,
            int partitions,
            boolean bounded,
            long pollMillis,
            String table) {
        this.format = format;
        this.physicalType = physicalType;
        this.path = path;
        this.layout = layout;
        this.partitions = partitions;
        this.bounded = bounded;
        this.pollMillis = pollMillis;
        this.table = table;
    }

    @Override
    public ChangelogMode getChangelogMode() {
        return format.getChangelogMode();
    }

    @Override
    public ScanRuntimeProvider getScanRuntimeProvider(ScanContext context) {
        DeserializationSchema<RowData> decoder = format.createRuntimeDecoder(context, physicalType);
        TypeInformation<RowData> type = context.createTypeInformation(physicalType);
        TopicSource<RowData> source =
                new TopicSource<>(path, layout, partitions, bounded, pollMillis, decoder);
        return new DataStreamScanProvider() {
            @Override
            public DataStream<RowData> produceDataStream(
                    ProviderContext providerContext, StreamExecutionEnvironment env) {
                WatermarkStrategy<RowData> strategy =
                        watermarkStrategy == null
                                ? WatermarkStrategy.noWatermarks()
                                : watermarkStrategy;
                DataStreamSource<RowData> stream =
                        env.fromSource(source, strategy, "UltronTopic[" + table + "]", type);
                int parallelism = env.getParallelism();
                stream.setParallelism(
                        parallelism > 0 ? Math.min(parallelism, partitions) : partitions);
                providerContext.generateUid(UID).ifPresent(stream::uid);
                return stream;
            }

            @Override
            public boolean isBounded() {
                return bounded;
            }
        };
    }

    @Override
    public void applyWatermark(WatermarkStrategy<RowData> strategy) {
        this.watermarkStrategy = strategy;
    }

    @Override
    public DynamicTableSource copy() {
        TopicTableSource copy =
                new TopicTableSource(
                        format, physicalType, path, layout, partitions, bounded, pollMillis,
                        table);
        copy.watermarkStrategy = watermarkStrategy;
        return copy;
    }

    @Override
    public String asSummaryString() {
        return "UltronTopic";
    }
}
