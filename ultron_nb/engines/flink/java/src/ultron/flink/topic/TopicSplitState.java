package ultron.flink.topic;

/** The mutable position of a split in its reader: updated with every emitted record. */
final class TopicSplitState {
    private final TopicSplit split;
    private String file;
    private long offset;

    TopicSplitState(TopicSplit split) {
        this.split = split;
        this.file = split.file;
        this.offset = split.offset;
    }

    void advance(String newFile, long newOffset) {
        this.file = newFile;
        this.offset = newOffset;
    }

    TopicSplit toSplit() {
        return split.at(file, offset);
    }
}
