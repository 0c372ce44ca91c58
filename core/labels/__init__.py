"""Labels from several annotators: the label matrix, consensus methods, agreement, adjudication."""
