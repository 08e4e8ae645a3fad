package ultron.flink.topic;

import org.apache.flink.api.connector.source.SplitEnumerator;
import org.apache.flink.api.connector.source.SplitEnumeratorContext;
import org.apache.flink.api.connector.source.SplitsAssignment;

import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Assigns each partition to one source subtask (partition {@code k} to subtask {@code k mod
 * parallelism}), once: after that a split lives in its reader's state. Splits a failed reader
 * hands back go to the same subtask again. Bounded: every reader is told there are no more
 * splits, so it finishes when its partitions are read.
 */
final class TopicEnumerator implements SplitEnumerator<TopicSplit, TopicEnumeratorState> {
    private final SplitEnumeratorContext<TopicSplit> context;
    private final boolean bounded;
    private final Map<Integer, List<TopicSplit>> pending = new TreeMap<>();

    TopicEnumerator(
            SplitEnumeratorContext<TopicSplit> context,
            Collection<TopicSplit> unassigned,
            boolean bounded) {
        this.context = context;
        this.bounded = bounded;
        unassigned.forEach(this::hold);
    }

    private void hold(TopicSplit split) {
        int owner = split.partition % Math.max(1, context.currentParallelism());
        pending.computeIfAbsent(owner, k -> new ArrayList<>()).add(split);
    }

    private void assign(int subtask) {
        List<TopicSplit> mine = pending.remove(subtask);
        if (mine != null && !mine.isEmpty()) {
            context.assignSplits(new SplitsAssignment<>(Collections.singletonMap(subtask, mine)));
        }
        if (bounded) {
            context.signalNoMoreSplits(subtask);
        }
    }

    @Override
    public void start() {}

    @Override
    public void handleSplitRequest(int subtask, String host) {}

    @Override
    public void addSplitsBack(List<TopicSplit> splits, int subtask) {
        splits.forEach(this::hold);
        if (context.registeredReaders().containsKey(subtask)) {
            assign(subtask);
        }
    }

    @Override
    public void addReader(int subtask) {
        assign(subtask);
    }

    @Override
    public TopicEnumeratorState snapshotState(long checkpointId) {
        List<TopicSplit> all = new ArrayList<>();
        pending.values().forEach(all::addAll);
        return new TopicEnumeratorState(all);
    }

    @Override
    public void close() {}
}
