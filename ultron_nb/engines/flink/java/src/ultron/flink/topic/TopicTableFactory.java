package ultron.flink.topic;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.ReadableConfig;
import org.apache.flink.table.api.ValidationException;
import org.apache.flink.table.connector.format.DecodingFormat;
import org.apache.flink.table.connector.source.DynamicTableSource;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.factories.DeserializationFormatFactory;
import org.apache.flink.table.factories.DynamicTableSourceFactory;
import org.apache.flink.table.factories.FactoryUtil;

import java.time.Duration;
import java.util.HashSet;
import java.util.Set;

/**
 * {@code 'connector' = 'ultron-topic'}: a local topic (or a Flink node's output) as an
 * ordered, partitioned stream. Options: {@code path}, {@code partitions}, {@code format} (and
 * its own options, e.g. {@code json.timestamp-format.standard}), {@code layout} ({@code
 * topic} or {@code sink}), {@code mode} ({@code live} or {@code bounded}), {@code
 * poll-interval}.
 */
public final class TopicTableFactory implements DynamicTableSourceFactory {
    public static final String IDENTIFIER = "ultron-topic";

    public static final ConfigOption<String> PATH =
            ConfigOptions.key("path")
                    .stringType()
                    .noDefaultValue()
                    .withDescription("The topic directory (layout topic) or the directory of "
                            + "a node's part files (layout sink).");
    public static final ConfigOption<Integer> PARTITIONS =
            ConfigOptions.key("partitions")
                    .intType()
                    .noDefaultValue()
                    .withDescription("Number of partitions (topic) or sink subtasks (sink).");
    public static final ConfigOption<String> LAYOUT =
            ConfigOptions.key("layout")
                    .stringType()
                    .defaultValue("topic")
                    .withDescription("'topic': pNNNN/seg-NNNNNNNN.jsonl; 'sink': "
                            + "part-<uuid>-<subtask>-<counter> files.");
    public static final ConfigOption<String> MODE =
            ConfigOptions.key("mode")
                    .stringType()
                    .defaultValue("live")
                    .withDescription("'live': tail every partition; 'bounded': read the files "
                            + "present when the job starts, then finish.");
    public static final ConfigOption<Duration> POLL_INTERVAL =
            ConfigOptions.key("poll-interval")
                    .durationType()
                    .defaultValue(Duration.ofMillis(500))
                    .withDescription("How often a partition at its end looks for a new file.");

    @Override
    public String factoryIdentifier() {
        return IDENTIFIER;
    }

    @Override
    public Set<ConfigOption<?>> requiredOptions() {
        Set<ConfigOption<?>> options = new HashSet<>();
        options.add(PATH);
        options.add(PARTITIONS);
        options.add(FactoryUtil.FORMAT);
        return options;
    }

    @Override
    public Set<ConfigOption<?>> optionalOptions() {
        Set<ConfigOption<?>> options = new HashSet<>();
        options.add(LAYOUT);
        options.add(MODE);
        options.add(POLL_INTERVAL);
        return options;
    }

    @Override
    public DynamicTableSource createDynamicTableSource(Context context) {
        FactoryUtil.TableFactoryHelper helper = FactoryUtil.createTableFactoryHelper(this, context);
        DecodingFormat<DeserializationSchema<RowData>> format =
                helper.discoverDecodingFormat(DeserializationFormatFactory.class, FactoryUtil.FORMAT);
        helper.validate();
        ReadableConfig options = helper.getOptions();
        String table = context.getObjectIdentifier().asSummaryString();
        TopicLayout layout;
        try {
            layout = TopicLayout.of(options.get(LAYOUT));
        } catch (IllegalArgumentException e) {
            throw new ValidationException("table " + table + ": " + e.getMessage());
        }
        String mode = options.get(MODE);
        if (!mode.equals("live") && !mode.equals("bounded")) {
            throw new ValidationException(
                    "table " + table + ": unknown mode '" + mode + "' (live or bounded)");
        }
        int partitions = options.get(PARTITIONS);
        if (partitions < 1) {
            throw new ValidationException(
                    "table " + table + ": 'partitions' must be at least 1, not " + partitions);
        }
        long poll = Math.max(10, options.get(POLL_INTERVAL).toMillis());
        return new TopicTableSource(
                format,
                context.getPhysicalRowDataType(),
                options.get(PATH),
                layout,
                partitions,
                mode.equals("bounded"),
                poll,
                table);
    }
}
