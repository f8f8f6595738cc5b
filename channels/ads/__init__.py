"""Ad-platform audience sync: live audience membership to Meta, Google Ads,
TikTok and signed webhooks. An audience member is not a message (no subject,
caps, quiet hours or pixel): nothing here goes through the delivery pipeline."""
